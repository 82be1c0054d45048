"""Masked model == physically pruned model, for every architecture and group kind."""
from __future__ import annotations

import pytest
import torch

from lmprune.arch import describe
from lmprune.structures import Masks, apply_masks, remove

from mask_recipes import TINY, fresh, inputs_for, logits, random_masks

SCENARIOS = {
    "heads": ("heads",),
    "kv_groups": ("kv_groups",),
    "neurons": ("neurons",),
    "hidden": ("hidden",),
    "sublayers": ("attention", "ffn"),
    "layers": ("layers",),
    "everything": ("heads", "kv_groups", "neurons", "hidden", "attention", "ffn", "layers"),
}


def masked_vs_removed(name: str, kinds, seed: int) -> tuple[float, float, torch.nn.Module]:
    model, structure = fresh(name)
    inputs = inputs_for(model)
    masks = random_masks(structure, kinds, seed=seed)
    dense = logits(model, inputs)
    with apply_masks(model, masks, structure):
        masked = logits(model, inputs)
    remove(model, masks, structure)
    pruned = logits(model, inputs)
    return (masked - pruned).abs().max().item(), (masked - dense).abs().max().item(), model


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_masked_equals_removed(tiny_name, scenario):
    seed = 0
    if scenario == "kv_groups" and not any(s.group_size > 1 for s in fresh(tiny_name)[1].attention):
        pytest.skip("multi-head attention: key/value groups are the heads themselves")
    diff, change, model = masked_vs_removed(tiny_name, SCENARIOS[scenario], seed)
    assert diff <= 1e-4, f"{tiny_name}/{scenario}: masked and pruned logits differ by {diff}"
    if scenario == "everything":  # a second draw of the most complex case
        diff2, _, _ = masked_vs_removed(tiny_name, SCENARIOS[scenario], seed + 1)
        diff = max(diff, diff2)
        assert diff <= 1e-4
    assert change > 0, "the masks should change the model's output (the test would be vacuous)"
    describe(model)  # the pruned model is still describable (pruning can continue)


@pytest.mark.parametrize("name", TINY)
def test_removal_shrinks_parameters(name):
    model, structure = fresh(name)
    before = sum(p.numel() for p in model.parameters())
    remove(model, random_masks(structure, SCENARIOS["everything"], seed=3), structure)
    assert sum(p.numel() for p in model.parameters()) < before


@pytest.mark.parametrize("name", ["tiny-t5", "tiny-llama", "tiny-bert", "tiny-mpnet"])
def test_first_sublayers_removed(name):
    """T5's first self-attention owns the position bias: removing it must keep the bias."""
    model, structure = fresh(name)
    inputs = inputs_for(model)
    masks = Masks.ones(structure, ("attention", "ffn"))
    masks.attention[structure.attention[0].name] = torch.tensor(0.0)
    masks.ffn[structure.ffn[0].name] = torch.tensor(0.0)
    with apply_masks(model, masks, structure):
        masked = logits(model, inputs)
    remove(model, masks, structure)
    assert (logits(model, inputs) - masked).abs().max() <= 1e-4
    assert structure.attention[0].name not in {s.name for s in describe(model).attention}


def test_hooks_are_removed_on_exit():
    model, structure = fresh("tiny-llama")
    inputs = inputs_for(model)
    dense = logits(model, inputs)
    masks = random_masks(structure, SCENARIOS["everything"], seed=0)
    with apply_masks(model, masks, structure):
        assert not torch.allclose(logits(model, inputs), dense)
    assert torch.equal(logits(model, inputs), dense)


def test_soft_masks_are_differentiable():
    model, structure = fresh("tiny-llama")
    masks = Masks.ones(structure, ("heads", "neurons", "hidden"))
    for tensor in [*masks.heads.values(), *masks.neurons.values(), masks.hidden]:
        tensor.mul_(0.5).requires_grad_(True)
    with apply_masks(model, masks, structure):
        model(**inputs_for(model)).logits.pow(2).mean().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in masks.heads.values())
    assert masks.hidden.grad is not None and masks.neurons[structure.ffn[0].name].grad is not None


def test_zero_heads_with_bias_become_a_constant():
    """All heads of a BERT layer removed but the sublayer kept: o's bias is still added."""
    model, structure = fresh("tiny-bert")
    inputs = inputs_for(model)
    site = structure.attention[0]
    masks = Masks.ones(structure, ("heads",))
    masks.heads[site.name] = torch.zeros(site.num_heads)
    with apply_masks(model, masks, structure):
        masked = logits(model, inputs)
    remove(model, masks, structure)
    assert (logits(model, inputs) - masked).abs().max() <= 1e-4
