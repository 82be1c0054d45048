"""``recovery.gradient_checkpointing``: LoRA recovery recomputing each layer's activations in
backward trains the same adapters (LoRA dropout included) on dense and pruned models, says so
in its report, and refuses a model transformers cannot checkpoint before reading any data."""
from __future__ import annotations

import json

import pytest
import torch
from recovery_helpers import FAST, ROWS, pruned_tiny, tiny_run

from lmprune.errors import LmpruneError
from lmprune.recovery import recover
from lmprune.training.recompute import recomputing
from lmprune.zoo import build_tiny


def _calls(model) -> list:
    """Calls of the first layer's attention module with gradients on (forward + recompute)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    calls: list = []
    layer = next(m for m in model.modules() if isinstance(m, GradientCheckpointingLayer))
    layer.mlp.register_forward_pre_hook(lambda *a: calls.append(torch.is_grad_enabled()))
    return calls


@pytest.mark.parametrize("pruned", [False, True])
def test_recomputing_recovers_the_same_adapters(tmp_path, tokenizer, pruned):
    def run(recompute: bool):
        model = pruned_tiny()[0] if pruned else build_tiny("tiny-llama", "causal-lm")
        calls = _calls(model)
        run_config = tiny_run("recovery.dropout=0.1",
                              f"recovery.gradient_checkpointing={recompute}")
        result = recover(model, tokenizer, run_config, tmp_path / f"r{recompute}", data=ROWS,
                         **FAST)
        return result, calls

    (plain, plain_calls), (again, calls) = run(False), run(True)
    assert calls.count(True) == 2 * plain_calls.count(True) > 0
    assert again.losses == pytest.approx(plain.losses, rel=1e-6, abs=1e-7)
    worst = max((a - b).abs().max().item() for a, b in zip(
        plain.model.state_dict().values(), again.model.state_dict().values()))
    assert worst <= 1e-6
    assert not recomputing(plain.model)
    assert not recomputing(again.model)  # the saved model leaves as it came
    report = json.loads((tmp_path / "rTrue" / "recovery.json").read_text())
    assert report["config"]["gradient_checkpointing"] is True


def test_a_model_without_checkpointing_is_refused_before_the_data(tmp_path, tokenizer):
    model = build_tiny("tiny-llama", "causal-lm")
    model.supports_gradient_checkpointing = False  # as transformers' MPNet says
    with pytest.raises(LmpruneError, match="recovery.gradient_checkpointing: transformers has no "
                                           "gradient checkpointing"):
        recover(model, tokenizer, tiny_run("recovery.gradient_checkpointing=true"),
                tmp_path / "out", data="no-such-data-file.jsonl", **FAST)
    assert not (tmp_path / "out").exists()
