"""The `taylor` method end to end on tiny-llama: scores -> masks -> removal, in its three modes."""
from __future__ import annotations

import pytest
import torch

from lmprune.arch import describe
from lmprune.config import load_config
from lmprune.data.calibration import Calibration
from lmprune.errors import LmpruneError
from lmprune.pruners.selection import select
from lmprune.registry import METHODS, load_builtin_methods
from lmprune.scorers.taylor import taylor_scores
from lmprune.structures import apply_masks, remove
from lmprune.zoo import build_tiny

# tiny-llama: 2 layers, hidden 64, 8 query heads (8 dims) over 2 kv groups, FFN 96


def calibration(n: int = 4, length: int = 16) -> Calibration:
    ids = torch.randint(3, 128, (n, length), generator=torch.Generator().manual_seed(0))
    return Calibration(samples=ids, heldout=None, pool=None, dataset="random", split="train",
                       seq_len=length)


def run_config(*overrides: str):
    """Unit budgets (each site keeps round((1 - s) * units)) unless a test says otherwise."""
    return load_config(None, ["prune.method=taylor", "prune.budget=units", *overrides])


def prune(model, *overrides: str, calib=calibration()):
    load_builtin_methods()
    return METHODS.get("taylor")(model, describe(model), run_config(*overrides), calib)


def assert_masked_equals_removed(model, masks):
    ids = calibration(2, 12).samples
    structure = describe(model)
    with torch.no_grad():
        dense = model(input_ids=ids).logits
        with apply_masks(model, masks, structure):
            masked = model(input_ids=ids).logits
        remove(model, masks, structure)
        pruned = model(input_ids=ids).logits
    assert (masked - pruned).abs().max() <= 1e-4
    assert (masked - dense).abs().max() > 0
    describe(model)


def test_block_mode_heads_and_neurons():
    model = build_tiny("tiny-llama")
    masks = prune(model, "taylor.mode=block", "prune.sparsity=0.5", "prune.round_to=8",
                  "prune.structures=[heads,neurons]")
    for site, mask in masks.heads.items():  # 2 of 4 query heads in each kv group
        assert mask.view(2, 4).sum(1).tolist() == [2, 2], site
    assert all(int(m.sum()) == 48 for m in masks.neurons.values())
    assert_masked_equals_removed(model, masks)
    assert model.model.layers[0].mlp.down_proj.weight.shape == (64, 48)


def test_block_mode_follows_the_configured_importance():
    model = build_tiny("tiny-llama")
    config = ["taylor.importance=element2", "taylor.aggregation=max", "prune.sparsity=0.3",
              "prune.structures=[kv_groups,neurons]", "prune.layer_range=[1,2]"]
    masks = prune(model, *config)
    assert list(masks.kv_groups) == ["layers.1.attn"] and list(masks.neurons) == ["layers.1.ffn"]
    structure = describe(model)
    scores = taylor_scores(model, structure, calibration().samples, "element2", "max",
                           kinds=("kv_groups", "neurons"), progress=False)
    expected = select(structure, scores, 0.3, ["kv_groups", "neurons"], 1, [1, 2])
    assert torch.equal(masks.neurons["layers.1.ffn"], expected.neurons["layers.1.ffn"])
    assert torch.equal(masks.kv_groups["layers.1.attn"], expected.kv_groups["layers.1.attn"])
    assert_masked_equals_removed(model, masks)


def test_channel_mode_prunes_hidden_channels():
    model = build_tiny("tiny-llama")
    masks = prune(model, "taylor.mode=channel", "prune.sparsity=0.25")
    assert int(masks.hidden.sum()) == 48 and not masks.heads and not masks.neurons
    assert_masked_equals_removed(model, masks)
    assert model.config.hidden_size == 48


def test_layer_mode_drops_the_least_important_layers():
    model = build_tiny("tiny-llama")
    masks = prune(model, "taylor.mode=layer", "prune.sparsity=0.5", "taylor.importance=vector")
    assert sorted(float(m) for m in masks.layers.values()) == [0.0, 1.0]
    assert_masked_equals_removed(model, masks)
    assert len(model.model.layers) == 1


@pytest.mark.parametrize("overrides, calib, message", [
    ((), None, "needs calibration data"),
    (("prune.structures=[hidden]",), calibration(), "taylor.mode=channel"),
    (("prune.layer_range=[5,9]",), calibration(), "selects none of the model's 2 layers"),
    (("prune.sparsity=0.9",), calibration(), "would leave zero units"),
    (("prune.structures=[kv_groups]", "prune.sparsity=0.8"), calibration(), "key/value groups"),
])
def test_errors(overrides, calib, message):
    model = build_tiny("tiny-llama")
    with pytest.raises(LmpruneError, match=message):
        prune(model, *overrides, calib=calib)
    assert all(p.grad is None for p in model.parameters())


def test_params_budget_hits_the_target_share_of_body_parameters():
    from lmprune.structures.counting import count_parameters

    model = build_tiny("tiny-llama")
    before = count_parameters(model).body
    masks = prune(model, "prune.budget=params", "prune.sparsity=0.3",
                  "prune.structures=[heads,neurons]")
    remove(model, masks, describe(model))
    assert abs(1 - count_parameters(model).body / before - 0.3) <= 0.002
