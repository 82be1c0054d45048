"""``train.mixed_precision``: bf16 runs every training forward under autocast (the linear
layers' outputs are bfloat16 while training) for any method, ``no`` keeps float32, and an
unsupported value is refused before anything loads."""
from __future__ import annotations

import json

import pytest
import torch

from lmprune.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["train.max_steps=4", "train.max_train_samples=32", "train.max_eval_samples=8",
        "train.eval_every=2", "train.measure=false", "train.progress=false",
        "apt.prune_start=1"]


def _record_linear_dtypes(monkeypatch) -> set:
    """The output dtypes of every nn.Linear called in training mode from now on."""
    seen: set = set()
    original = torch.nn.Linear.forward

    def forward(self, x):
        out = original(self, x)
        if self.training and torch.is_grad_enabled():
            seen.add(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.Linear, "forward", forward)
    return seen


def _train_recording(tmp_path, monkeypatch, method: str, precision: str):
    """Train, recording the output dtype of every nn.Linear called in training mode."""
    seen = _record_linear_dtypes(monkeypatch)
    out = tmp_path / f"{method}-{precision}"
    code = main(["train", "--method", method, "--model", "tiny-bert", "--task", "foods",
                 "--sparsity", "0.5", "--out", str(out), "--device", "cpu", *FAST,
                 f"train.mixed_precision={precision}"])
    assert code == 0
    return seen, json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("method", ["ft", "apt"])
def test_bf16_trains_under_autocast_and_no_keeps_float32(tmp_path, monkeypatch, method):
    seen, metrics = _train_recording(tmp_path, monkeypatch, method, "bf16")
    assert seen == {torch.bfloat16}
    assert metrics["config"]["mixed_precision"] == "bf16"
    assert 0.0 <= metrics["metric"] <= 1.0
    seen, metrics = _train_recording(tmp_path, monkeypatch, method, "no")
    assert seen == {torch.float32}
    assert metrics["config"]["mixed_precision"] == "no"


def test_unsupported_precision_is_refused(tmp_path, capsys):
    code = main(["train", "--method", "ft", "--model", "tiny-bert", "--out",
                 str(tmp_path / "r"), *FAST, "train.mixed_precision=fp16"])
    assert code != 0
    err = capsys.readouterr().err
    assert "mixed_precision" in err and "bf16" in err
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_bf16_on_a_gpu_without_bfloat16_is_refused(tmp_path, capsys, monkeypatch):
    import lmprune.recipes.train as recipe

    monkeypatch.setattr(recipe, "resolve_device", lambda name: torch.device("cuda:0"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    code = main(["train", "--method", "ft", "--model", "tiny-bert", "--out",
                 str(tmp_path / "r"), *FAST, "train.mixed_precision=bf16"])
    assert code != 0
    assert "no bfloat16 support" in capsys.readouterr().err
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_the_cli_flag_sets_the_precision(tmp_path, monkeypatch):
    seen = _record_linear_dtypes(monkeypatch)
    out = tmp_path / "flag"
    assert main(["train", "--method", "ft", "--model", "tiny-bert", "--out", str(out),
                 "--device", "cpu", "--mixed-precision", "bf16", *FAST]) == 0
    assert seen == {torch.bfloat16}
    assert json.loads((out / "metrics.json").read_text())["config"]["mixed_precision"] == "bf16"
