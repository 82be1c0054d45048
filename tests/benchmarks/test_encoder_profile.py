"""benchmarks/speed/encoder_profile.py: a compiled encoder forward, dense beside pruned."""
from __future__ import annotations

import json

import pytest

import torch

from bench_scripts import load

pytestmark = pytest.mark.usefixtures("one_thread")


def test_dense_is_profiled_first_and_pruned_rows_carry_their_flop_ratio(tmp_path):
    module = load("speed/encoder_profile.py")
    assert module.main(["--out", str(tmp_path), "--quick", "--batch", "2", "--seq", "16",
                        "--variants", "uniform-60", "--calls", "2",
                        "--compile-mode", "default"]) == 0
    found = json.loads((tmp_path / "encoder_profile.json").read_text())
    dense, pruned = found["runs"]
    assert (dense["variant"], pruned["variant"]) == ("dense", "uniform-60")
    assert dense["flop_ratio"] == pytest.approx(1.0)
    assert pruned["flop_ratio"] > 1.5  # 60% of heads and neurons gone
    assert pruned["widths"] != dense["widths"]
    assert dense["ms_per_forward"] > 0 and dense["first_call_s"] > 0
    assert dense["kernel_ms"] == 0.0  # no GPU kernels on a CPU
    report = (tmp_path / "encoder_profile.md").read_text()
    assert "| uniform-60 |" in report and "share of ideal" in report


def test_unknown_variant_is_refused():
    module = load("speed/encoder_profile.py")
    with pytest.raises(SystemExit, match="uniform-50"):
        module.variant(None, "uniform-50")


def test_the_hidden_variant_shrinks_the_hidden_size():
    module = load("speed/encoder_profile.py")
    models = load("speed/models.py")
    dense = models.build("roberta-base", torch.device("cpu"), torch.float32, quick=True)
    pruned = module.variant(dense, "hidden-60")
    assert pruned.config.hidden_size < dense.config.hidden_size == 128
