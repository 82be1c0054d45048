"""``lmprune train`` resumes a killed run from ``DIR.partial`` (issue #11)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import lmprune
from lmprune.cli.main import main
from lmprune.training.checkpoint import partial_dir

pytestmark = pytest.mark.usefixtures("one_thread")

ARGS = ["train", "--method", "apt", "--model", "tiny-bert", "--task", "foods",
        "--sparsity", "0.6", "train.max_steps=120", "train.epochs=10", "train.max_train_samples=96",
        "train.batch_size=8", "train.max_eval_samples=16", "train.eval_every=4",
        "train.measure=false", "train.progress=false", "apt.prune_start=2", "apt.events=4",
        "apt.prune_stop_epochs=4", "apt.structures=[heads,neurons,hidden]"]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    files = sorted((out / "model").glob("*.safetensors"))
    return {k: v for f in files for k, v in load_file(f).items()}


def _start_and_kill(out: Path, after_step: int) -> int:
    """Run ``lmprune train`` in a subprocess; SIGKILL it once a checkpoint past
    ``after_step`` exists. Returns the step of that checkpoint."""
    code = ("import sys, torch; torch.set_num_threads(1); from lmprune.cli.main import main; "
            "sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": str(Path(lmprune.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", code, *ARGS, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = partial_dir(out) / "phase-0.pt"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if checkpoint.exists():
                step = torch.load(checkpoint, map_location="cpu", weights_only=False)["step"]
                if step >= after_step:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return step
            time.sleep(0.05)
        raise AssertionError(f"the run ended before it could be killed: "
                             f"{proc.stderr.read().decode()[-2000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_killed_run_resumes_and_ends_as_an_uninterrupted_one(tmp_path):
    whole = tmp_path / "whole"
    assert main([*ARGS, "--out", str(whole)]) == 0
    expected = json.loads((whole / "metrics.json").read_text())
    assert not partial_dir(whole).exists()  # a finished run leaves no checkpoint behind
    compacted = [e["step"] for e in expected["training_cost"]["events"]
                 if e["kind"] == "compaction"]
    assert compacted

    killed = tmp_path / "killed"
    step = _start_and_kill(killed, after_step=compacted[0] + 4)  # in its pruned shape
    assert not killed.exists() and partial_dir(killed).is_dir()
    assert main([*ARGS, "--out", str(killed)]) == 0
    got = json.loads((killed / "metrics.json").read_text())
    assert not partial_dir(killed).exists()
    assert got["steps"] == expected["steps"] == 120 and step < 120
    assert got["metric"] == pytest.approx(expected["metric"], abs=1e-6)
    assert [p["step"] for p in got["curve"]] == [p["step"] for p in expected["curve"]]
    assert [p["metric"] for p in got["curve"]] == pytest.approx(
        [p["metric"] for p in expected["curve"]], abs=1e-6)
    assert got["phases"][0]["final_loss"] == pytest.approx(expected["phases"][0]["final_loss"],
                                                           rel=1e-4)
    assert got["info"]["apt"]["pruning_log"] == expected["info"]["apt"]["pruning_log"]
    assert got["kept_params_ratio"] == expected["kept_params_ratio"]
    a, b = _weights(whole), _weights(killed)
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert got["train_seconds"] > 0


def test_another_config_is_an_error_naming_the_fields(tmp_path, capsys):
    short = [*ARGS, "train.max_steps=4"]
    done = tmp_path / "done"
    assert main([*short, "--out", str(done)]) == 0
    config = yaml.safe_load((done / "config.yaml").read_text())  # what a partial run keeps
    config["seed"], config["train"]["lr"] = 7, 0.001
    out = tmp_path / "run"
    partial = partial_dir(out)
    partial.mkdir()
    (partial / "run.json").write_text(json.dumps({**config, "output": {
        **config["output"], "dir": str(out)}}))
    (partial / "phase-0.pt").write_bytes(b"")
    capsys.readouterr()
    assert main([*short, "--out", str(out)]) != 0
    err = capsys.readouterr().err
    assert "train.resume=false" in err
    assert [line.strip() for line in err.splitlines() if line.strip().startswith("- ")] == \
        ["- seed: 7 -> 0", "- train.lr: 0.001 -> None"]
    assert (partial / "run.json").exists()  # kept: the user decides
    assert main([*short, "train.resume=false", "--out", str(out)]) == 0
    assert not partial.exists() and (out / "metrics.json").exists()


class _Killed(BaseException):
    """Stands in for SIGKILL (nothing catches a BaseException subclass on the way out)."""


@pytest.mark.parametrize("method,model,extra,kill", [
    ("ft", "tiny-bert", [], 3), ("lora", "tiny-llama", [], 3), ("cofi", "tiny-bert", [], 3),
    # killed in its second phase (the distillation after the mask search)
    ("lora-prune-distill", "tiny-bert", ["mask_search.num_samples=32",
                                         "mask_search.tune_samples=32"], 5),
    ("lora-prune", "tiny-bert", ["mask_search.num_samples=32", "mask_search.tune_samples=32",
                                 "mask_search.probes=2"], 3),
    ("apt", "tiny-t5", ["apt.teacher=separate"], 3),
    ("apt", "tiny-llama", ["apt.schedule=oneshot"], 3),
    # killed with a bfloat16 teacher copy alive; distillation ends one step after the resume
    ("apt", "tiny-bert", ["apt.teacher=start", "apt.teacher_dtype=bfloat16",
                          "apt.distill_epochs=3"], 3),
    # the frozen backbone stored in float16: checkpoints hold it so, the export in float32
    ("apt", "tiny-bert", ["apt.frozen_dtype=float16", "apt.teacher=start",
                          "apt.teacher_dtype=bfloat16"], 3),
    # bf16 autocast: frozen linears stored in bfloat16 (apt.frozen_dtype=autocast, the
    # default), adapters' shared input casts; the export in float32
    ("apt", "tiny-bert", ["train.mixed_precision=bf16", "apt.teacher=start"], 3),
])
def test_every_method_resumes_where_it_stopped(tmp_path, monkeypatch, method, model, extra,
                                               kill):
    from lmprune.training.context import PhaseCheckpoint

    args = ["train", "--method", method, "--model", model, "--task", "foods", "--sparsity",
            "0.6", "train.max_steps=16", "train.epochs=10", "train.max_train_samples=32",
            "train.batch_size=8", "train.max_eval_samples=8", "train.eval_every=4",
            "train.measure=false", "train.progress=false", "apt.prune_start=1",
            "mask_search.distill_epochs=2", *extra]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    expected = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    save, saves = PhaseCheckpoint.save, []

    def dying_save(self, step, *a):
        save(self, step, *a)
        saves.append((self.index, step))
        if len(saves) == kill:
            raise _Killed

    monkeypatch.setattr(PhaseCheckpoint, "save", dying_save)
    out = tmp_path / "killed"
    with pytest.raises(_Killed):
        main([*args, "--out", str(out)])
    assert not out.exists() and partial_dir(out).is_dir()
    assert saves[-1][0] == (1 if kill == 5 else 0)
    monkeypatch.setattr(PhaseCheckpoint, "save", save)
    assert main([*args, "--out", str(out)]) == 0
    got = json.loads((out / "metrics.json").read_text())
    assert got["metric"] == pytest.approx(expected["metric"], abs=1e-6)
    assert [p["metric"] for p in got["curve"]] == pytest.approx(
        [p["metric"] for p in expected["curve"]], abs=1e-6)
    assert [p["final_loss"] for p in got["phases"]] == pytest.approx(
        [p["final_loss"] for p in expected["phases"]], rel=1e-5)
    a, b = _weights(tmp_path / "whole"), _weights(out)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    if "apt.frozen_dtype=float16" in extra or "train.mixed_precision=bf16" in extra:
        # stored in 16 bits while training only
        assert {v.dtype for v in b.values()} == {torch.float32}
    probes = lambda m: [p["step"] for p in (m["info"].get("mask_search") or {}).get("probes", [])]  # noqa: E731
    assert probes(got) == probes(expected)
