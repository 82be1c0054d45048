"""Data-parallel ``lmprune train`` (issue #14): two gloo processes through the real launcher
(``--num-gpus 2 --device cpu``) against one process with the same global batch and seed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lmprune
from lmprune.cli.main import main
from lmprune.errors import LmpruneError
from lmprune.training.checkpoint import partial_dir

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = ["--task", "foods", "--device", "cpu", "--sparsity", "0.5", "train.batch_size=8",
            "train.max_train_samples=32", "train.max_eval_samples=16", "train.measure=false",
            "train.progress=false", "train.test_split=null", "apt.prune_start=1",
            "apt.events=2", "apt.salience=fisher", "apt.prune_stop_epochs=0.5", "apt.structures=[heads,neurons,hidden]"]
ENV = {**os.environ, "PYTHONPATH": str(Path(lmprune.__file__).parents[1]), "OMP_NUM_THREADS": "1",
       "TQDM_DISABLE": "1"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny BERT without dropout (so that row shards compute what the whole batch does)."""
    from transformers import BertConfig, BertForSequenceClassification

    from lmprune.zoo import build_tiny_tokenizer

    path = tmp_path_factory.mktemp("dp-model")
    tok = build_tiny_tokenizer("tiny-bert")
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, vocab_size=len(tok), hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, num_labels=2,
                        pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _args(model_dir: Path, method: str, out: Path, steps: int, every: int) -> list[str]:
    return ["train", "--method", method, "--model", str(model_dir), "--out", str(out),
            *SETTINGS, f"train.max_steps={steps}", f"train.eval_every={every}"]


def _launch(args: list[str], processes: int) -> subprocess.Popen:
    extra = ["--num-gpus", str(processes)] if processes > 1 else []
    return subprocess.Popen([sys.executable, "-m", "lmprune", *args[:1], *extra, *args[1:]],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def _run(args: list[str], processes: int) -> None:
    proc = _launch(args, processes)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-3000:]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted((out / "model").glob("*.safetensors"))
            for k, v in load_file(f).items()}


def _assert_same_run(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    assert {k: v.shape for k, v in wa.items()} == {k: v.shape for k, v in wb.items()}
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5, msg=k)
    ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (a, b))
    assert ma["steps"] == mb["steps"] and ma["params"] == mb["params"]
    assert [p["keep_ratio"] for p in ma["curve"]] == [p["keep_ratio"] for p in mb["curve"]]
    assert (ma["info"] or {}).get("apt", {}).get("pruning_log") == \
        (mb["info"] or {}).get("apt", {}).get("pruning_log")
    assert len(ma["phases"]) == len(mb["phases"])  # mask-tuning trains no phase
    for pa, pb in zip(ma["phases"], mb["phases"]):
        assert pa["final_loss"] == pytest.approx(pb["final_loss"], rel=1e-4)


@pytest.mark.parametrize("method", ["apt", "apt-outlier", "ft", "lora"])
def test_two_processes_train_as_one_and_only_the_first_writes(tmp_path, model_dir, method):
    """``apt-outlier``: APT's default salience, whose activation and gradient sums (and the
    mean activation of its outlier term) are summed over the processes before the products."""
    one, two = tmp_path / "one", tmp_path / "two"
    extra = ["apt.salience=outlier"] if method == "apt-outlier" else []
    method = method.split("-")[0]
    assert main([*_args(model_dir, method, one, 6, 3), *extra]) == 0
    _run([*_args(model_dir, method, two, 6, 3), *extra], 2)
    _assert_same_run(one, two)
    # one output folder, written once: no partial checkpoints or staging folders left over
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    if method == "apt":  # compaction ran: the model shrank while it trained
        m = json.loads((two / "metrics.json").read_text())
        assert m["info"]["apt"]["compactions"]


@pytest.mark.parametrize("method,upstream", [("lora-prune", None), ("mask-tuning", "ft"),
                                             ("lora-prune-distill", "lora")])
def test_the_mask_search_baselines_train_as_one(tmp_path, model_dir, method, upstream):
    """Kwon's search and mask tuning run whole on every process (the same calibration batches
    and weights give the same masks); their training stages are sharded like lora's."""
    extra = ["mask_search.num_samples=16", "mask_search.tune_samples=16"]
    if upstream is not None:
        assert main([*_args(model_dir, upstream, tmp_path / upstream, 6, 3), *extra]) == 0
        extra.append(f"train.init_from={tmp_path / upstream}")
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*_args(model_dir, method, one, 6, 3), *extra]) == 0
    _run([*_args(model_dir, method, two, 6, 3), *extra], 2)
    _assert_same_run(one, two)
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".*staging*"))


@pytest.mark.parametrize("teacher", [False, True])
def test_cofi_trains_as_one(tmp_path, model_dir, teacher):
    """CoFi's L0 gates and Lagrange multipliers are parameter groups of the run's optimizer,
    so their gradients are averaged with the rest; each process draws the same gate noise
    (same seed, no dropout). Fails when the gates' gradients are left out of the average."""
    extra = []
    if teacher:  # distillation from a fine-tuned teacher, CoFi's default setting
        assert main(_args(model_dir, "ft", tmp_path / "ft", 6, 3)) == 0
        extra.append(f"train.teacher={tmp_path / 'ft'}")
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*_args(model_dir, "cofi", one, 8, 4), *extra]) == 0
    _run([*_args(model_dir, "cofi", two, 8, 4), *extra], 2)
    _assert_same_run(one, two)
    m = json.loads((two / "metrics.json").read_text())
    assert m["kept_params_ratio"] < 1.0  # the gates pruned something


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launch and every process under it (torchrun starts the workers in sessions
    of their own; psutil comes with accelerate)."""
    import psutil

    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    for p in [*tree, psutil.Process(proc.pid)] if proc.poll() is None else tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def _start_and_kill(args: list[str], processes: int, out: Path, after_step: int) -> None:
    """Launch the run; SIGKILL all its processes once a checkpoint past ``after_step`` exists."""
    proc = _launch(args, processes)
    checkpoint = partial_dir(out) / "phase-0.pt"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if checkpoint.exists():
                saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
                if saved["step"] >= after_step:
                    _kill_tree(proc)
                    return
            time.sleep(0.02)
        raise AssertionError(f"the run ended before it could be killed: "
                             f"{proc.stderr.read().decode()[-2000:]}")
    finally:
        _kill_tree(proc)


@pytest.mark.slow
@pytest.mark.parametrize("killed,resumed", [(2, 1), (1, 2)])
def test_a_checkpoint_resumes_on_another_number_of_processes(tmp_path, model_dir, killed,
                                                             resumed):
    steps = 40
    whole, out = tmp_path / "whole", tmp_path / "resumed"
    _run(_args(model_dir, "apt", whole, steps, 2), 1)
    _start_and_kill(_args(model_dir, "apt", out, steps, 2), killed, out, after_step=4)
    assert partial_dir(out).is_dir() and not (out / "metrics.json").exists()
    _run(_args(model_dir, "apt", out, steps, 2), resumed)
    assert not partial_dir(out).exists()
    _assert_same_run(whole, out)


def test_a_method_without_data_parallel_is_refused_before_any_work(tmp_path, monkeypatch,
                                                                   capsys):
    """Every method of ``lmprune train`` runs data parallel today; one added without it (here:
    cofi taken off the list) is refused before any work, by the CLI too."""
    from lmprune.config import load_config
    from lmprune.recipes import train as train_recipe
    from lmprune.config.train_schema import TRAIN_METHODS

    assert set(train_recipe.DATA_PARALLEL) == set(TRAIN_METHODS)
    for salience in ("outlier", "fisher", "magnitude", "random"):  # every APT salience
        train_recipe.check_data_parallel(load_config("train-apt", [f"apt.salience={salience}"]))
    monkeypatch.setattr(train_recipe, "DATA_PARALLEL",
                        tuple(m for m in train_recipe.DATA_PARALLEL if m != "cofi"))
    with pytest.raises(LmpruneError, match="data parallel: apt, ft, lora, lora-prune"):
        train_recipe.check_data_parallel(load_config("train-apt", ["train.method=cofi"]))
    # the CLI refuses before it launches anything
    assert main(["train", "--method", "cofi", "--num-gpus", "2", "--device", "cpu",
                 "--out", str(tmp_path / "x")]) != 0
    assert "does not run data parallel yet" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
