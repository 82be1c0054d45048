"""benchmarks/apt_base/saved_tensors.py: what autograd keeps for backward, per module."""
from __future__ import annotations

import json

from bench_scripts import load


def _module():
    return load("apt_base/saved_tensors.py")


def test_frozen_linears_save_nothing_and_adapters_keep_their_input(tmp_path):
    assert _module().main(["--out", str(tmp_path), "--tiny", "--batch", "2"]) == 0
    runs = {r["method"]: r for r in json.loads((tmp_path / "saved_tensors.json").read_text())
            ["runs"]}
    ft, apt = runs["ft"]["by_module"], runs["apt"]["by_module"]
    # tiny shape: hidden 64, FFN 128, batch 2 x 16 tokens = 32 rows of float32
    down_input = 32 * 128 * 4 / 1e6
    assert ft["bert.encoder.layer.N.output.dense [32, 128] float32"] == round(2 * down_input, 3)
    # frozen in APT: no input saved (only its neuron mask, a vector, for the mask product)
    assert "bert.encoder.layer.N.output.dense [32, 128] float32" not in apt
    assert all(k.endswith("[128] float32")
               for k in apt if k.startswith("bert.encoder.layer.N.output.dense"))
    # the FFN up projection's adapter keeps its input (FT's trained weight does too)
    key = "bert.encoder.layer.N.intermediate.dense [32, 64] float32"
    assert apt[key] == ft[key] == round(2 * 32 * 64 * 4 / 1e6, 3)
    assert runs["apt"]["total_mb"] < runs["ft"]["total_mb"]
    assert abs(runs["ft"]["total_mb"] - sum(ft.values())) < 1e-2


def test_bf16_autocast_saves_the_adapter_input_in_bfloat16(tmp_path):
    assert _module().main(["--out", str(tmp_path), "--tiny", "--batch", "2",
                           "--mixed-precision", "bf16"]) == 0
    out = json.loads((tmp_path / "saved_tensors.json").read_text())
    assert out["mixed_precision"] == "bf16"
    apt = {r["method"]: r for r in out["runs"]}["apt"]
    kept = apt["by_module"]
    # the adapted FFN up projection's input, 2 x 16 tokens x 64, 2 bytes per value, 2 layers
    one_copy = round(2 * 2 * 16 * 64 * 2 / 1e6, 3)
    assert kept["bert.encoder.layer.N.intermediate.dense [2, 16, 64] bfloat16"] == one_copy
    # the query and value adapters read one layer input: one cast copy, made by the first
    assert kept["bert.encoder.layer.N.attention.self.query [2, 16, 64] bfloat16"] == one_copy
    assert not any(k.startswith("bert.encoder.layer.N.attention.self.value [2, 16, 64]")
                   for k in kept)
    for name in ("intermediate.dense", "attention.self.query"):
        assert f"bert.encoder.layer.N.{name} [2, 16, 64] float32" not in kept
    assert abs(sum(apt["by_dtype_mb"].values()) - apt["total_mb"]) < 1e-2
