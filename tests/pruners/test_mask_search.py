"""Kwon et al.'s mask search: per-sample mask gradients, Fisher, the search (against brute
force), the rearrangement, and the end-to-end search on tiny-bert and tiny-llama (GQA)."""
from __future__ import annotations

import itertools

import pytest
import torch

from lmprune.arch import describe
from lmprune.errors import LmpruneError, MaskError
from lmprune.pruners._mask_search import (MaskGradients, collect_mask_gradients,
                                          estimated_loss_increase, fisher_importance, mask_search,
                                          rearrange_masks, search_masks, to_masks)
from lmprune.structures import Masks, apply_masks, remove
from lmprune.structures.counting import head_cost, neuron_cost
from lmprune.zoo import build_tiny

pytestmark = pytest.mark.usefixtures("one_thread")
# tiny-bert: 2 layers, 4 heads of 8 dims, FFN 64. tiny-llama: 8 query heads over 2 kv groups, FFN 96


def make_batches(name: str, count: int, size: int, length: int = 10, seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids = torch.randint(3, 128, (size, length), generator=gen)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        batch["labels"] = torch.randint(0, 2, (size,), generator=gen) if name == "tiny-bert" else ids
        batches.append(batch)
    return batches


def hand_gradients(model, batch):
    """Autograd of the loss through apply_masks with all-ones masks that require grad."""
    structure = describe(model)
    masks = Masks.ones(structure, kinds=("heads", "neurons"))
    leaves = list(masks.heads.values()) + list(masks.neurons.values())
    for leaf in leaves:
        leaf.requires_grad_(True)
    with apply_masks(model, masks, structure):
        loss = model(**batch).loss
    grads = torch.autograd.grad(loss, leaves)
    n = len(masks.heads)
    return torch.stack(grads[:n]), torch.stack(grads[n:])


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-llama"])
def test_gradients_equal_autograd_of_the_masked_forward_on_one_sample(name):
    model = build_tiny(name)
    batch = make_batches(name, 1, 1)[0]
    grads = collect_mask_gradients(model, [batch])
    heads, neurons = hand_gradients(model, batch)
    assert grads.heads.shape == (1, 2, model.config.num_attention_heads)
    assert torch.allclose(grads.heads[0], heads, rtol=1e-4, atol=1e-9)
    assert torch.allclose(grads.neurons[0], neurons, rtol=1e-4, atol=1e-9)
    assert grads.heads.abs().sum() > 0 and grads.neurons.abs().sum() > 0


def test_a_batch_gives_each_sample_its_own_gradient_and_leaves_the_model_alone():
    model = build_tiny("tiny-bert").train()
    flags = [p.requires_grad for p in model.parameters()]
    batch = make_batches("tiny-bert", 1, 3)[0]
    singles = [{k: v[i:i + 1] for k, v in batch.items()} for i in range(3)]
    together = collect_mask_gradients(model, [batch])
    apart = collect_mask_gradients(model, singles)
    assert torch.allclose(together.heads, apart.heads, rtol=1e-4, atol=1e-9)
    assert torch.allclose(together.neurons, apart.neurons, rtol=1e-4, atol=1e-9)
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags and model.training


def test_max_samples_cuts_the_last_batch():
    model = build_tiny("tiny-bert")
    grads = collect_mask_gradients(model, make_batches("tiny-bert", 3, 4), max_samples=6)
    assert grads.heads.shape[0] == grads.neurons.shape[0] == 6


def test_batches_without_labels_are_refused():
    model = build_tiny("tiny-bert")
    batch = make_batches("tiny-bert", 1, 2)[0]
    del batch["labels"]
    with pytest.raises(LmpruneError, match="labels"):
        collect_mask_gradients(model, [batch])


def test_fisher_is_the_sum_of_squared_gradients():
    grads = MaskGradients(torch.tensor([[[1.0, -2.0]], [[3.0, 0.5]]]),
                          torch.tensor([[[0.0, 1.0, -1.0]], [[2.0, 2.0, 0.0]]]))
    heads, neurons = fisher_importance(grads)
    assert heads.tolist() == [[10.0, 4.25]]
    assert neurons.tolist() == [[4.0, 5.0, 1.0]]


def test_search_on_a_hand_example():
    # Heads cost 10, neurons 1, budget 22. Two heads leave 2 neurons: 9 + 8 + 3 + 2 = 22;
    # one head leaves 12 neurons (all 4): 9 + 3 + 2 + 1 + 1 = 16.
    heads = torch.tensor([[9.0, 1.0], [8.0, 0.5]])
    neurons = torch.tensor([[3.0, 1.0], [2.0, 1.0]])
    out = search_masks(heads, neurons, 10.0, 1.0, 22.0)
    assert out["heads"].tolist() == [[1, 0], [1, 0]]
    assert out["neurons"].tolist() == [[1, 0], [1, 0]]


def brute_force(heads, neurons, h_cost, n_cost, budget):
    """Best kept importance over every subset with at least one head within the budget."""
    imp = torch.cat([heads.flatten(), neurons.flatten()]).tolist()
    cost = [h_cost] * heads.numel() + [n_cost] * neurons.numel()
    best = None
    for keep in itertools.product((0, 1), repeat=len(imp)):
        if sum(keep[:heads.numel()]) and sum(k * c for k, c in zip(keep, cost)) <= budget:
            value = sum(k * v for k, v in zip(keep, imp))
            best = value if best is None else max(best, value)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_search_is_optimal_and_within_budget_on_small_cases(seed):
    gen = torch.Generator().manual_seed(seed)
    heads, neurons = torch.rand(2, 3, generator=gen), torch.rand(2, 3, generator=gen) * 0.4
    h_cost, n_cost = 7.0, 3.0
    for budget in (7.0, 11.0, 16.0, 24.5, 33.0, 40.0, 60.0):
        out = search_masks(heads, neurons, h_cost, n_cost, budget)
        spent = h_cost * out["heads"].sum() + n_cost * out["neurons"].sum()
        assert spent <= budget
        kept = float((out["heads"] * heads).sum() + (out["neurons"] * neurons).sum())
        assert kept == pytest.approx(brute_force(heads, neurons, h_cost, n_cost, budget), abs=1e-6)


def test_search_never_exceeds_a_budget_with_per_site_costs():
    gen = torch.Generator().manual_seed(1)
    heads, neurons = torch.rand(4, 6, generator=gen), torch.rand(4, 40, generator=gen)
    h_cost = torch.tensor([[30.0], [25.0], [30.0], [41.0]])
    n_cost = torch.tensor([[3.0], [5.0], [3.0], [4.0]])
    total = float((h_cost * 6).sum() + (n_cost * 40).sum())
    for ratio in torch.linspace(0.05, 1.0, 20).tolist():
        out = search_masks(heads, neurons, h_cost, n_cost, ratio * total)
        assert float((out["heads"] * h_cost).sum() + (out["neurons"] * n_cost).sum()) <= ratio * total
        assert out["heads"].sum() >= 1


def test_search_with_the_whole_budget_keeps_everything():
    gen = torch.Generator().manual_seed(2)
    heads, neurons = torch.rand(3, 4, generator=gen), torch.rand(3, 16, generator=gen)
    out = search_masks(heads, neurons, 5.0, 2.0, 5.0 * 12 + 2.0 * 48)
    assert bool(out["heads"].all()) and bool(out["neurons"].all())


def test_search_refuses_a_budget_below_one_head():
    with pytest.raises(LmpruneError, match="keep_ratio"):
        search_masks(torch.ones(1, 2), torch.ones(1, 2), 10.0, 1.0, 9.0)


def test_rearrangement_finds_the_cancelling_pair_on_a_hand_example():
    # g_a = -g_b: pruning both costs nothing, although each has the largest Fisher diagonal.
    site = torch.tensor([[2.0, -2.0, 0.0], [0.0, 0.0, 1.0]])  # [samples, units]
    grads = MaskGradients(site[:, None, :], site[:, None, :])
    selection = {"heads": torch.tensor([[0.0, 1.0, 0.0]]), "neurons": torch.tensor([[0.0, 1.0, 0.0]])}
    assert estimated_loss_increase(selection["heads"][0], site) == 5.0
    out = rearrange_masks(selection, grads)
    assert out["heads"].tolist() == [[0.0, 0.0, 1.0]]
    assert estimated_loss_increase(out["heads"][0], site) == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_rearrangement_keeps_counts_and_never_raises_the_estimated_loss(seed):
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(12, 12, generator=gen)  # correlated units
    heads = torch.randn(20, 3, 12, generator=gen) @ mix
    neurons = torch.randn(20, 2, 30, generator=gen)
    grads = MaskGradients(heads, neurons)
    selection = {"heads": (torch.rand(3, 12, generator=gen) < 0.5).float(),
                 "neurons": (torch.rand(2, 30, generator=gen) < 0.4).float()}
    out = rearrange_masks(selection, grads)
    for kind, g in (("heads", heads), ("neurons", neurons)):
        assert out[kind].sum(1).tolist() == selection[kind].sum(1).tolist()
        for s in range(g.shape[1]):
            before = estimated_loss_increase(selection[kind][s], g[:, s])
            assert estimated_loss_increase(out[kind][s], g[:, s]) <= before + 1e-9


def test_to_masks_names_rows_by_site_and_checks_shapes():
    structure = describe(build_tiny("tiny-bert"))
    masks = to_masks({"heads": torch.tensor([[1.0, 0, 1, 1], [0, 1, 1, 1]]),
                      "neurons": torch.ones(2, 64)}, structure)
    assert masks.heads["layers.1.attn"].tolist() == [0, 1, 1, 1]
    with pytest.raises(MaskError, match="rows"):
        to_masks({"heads": torch.ones(3, 4), "neurons": torch.ones(2, 64)}, structure)


def prunable_parameters(model) -> int:
    """Parameters of every head (kv group for GQA) and neuron left in the model."""
    structure = describe(model)
    total = sum(site.width * neuron_cost(model, site) for site in structure.ffn)
    for site in structure.attention:
        if site.group_size == 1:
            total += site.num_heads * head_cost(model, site)["head"]
        else:
            total += site.num_kv_heads * head_cost(model, site)["kv_group"]
    return total


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-llama"])
@pytest.mark.parametrize("keep_ratio", [0.4, 0.7])
def test_mask_search_removes_to_a_model_within_budget(name, keep_ratio):
    model = build_tiny(name)
    batches = make_batches(name, 3, 4)
    budget = keep_ratio * prunable_parameters(model)
    masks = mask_search(model, batches, keep_ratio)
    assert masks.is_binary()
    remove(model, masks)
    assert prunable_parameters(model) <= budget
    assert prunable_parameters(model) > 0.8 * budget  # the budget is spent, not wasted
    with torch.no_grad():
        assert torch.isfinite(model(**batches[0]).logits).all()


def test_mask_search_keeps_whole_kv_groups_under_gqa():
    model = build_tiny("tiny-llama")
    masks = mask_search(model, make_batches("tiny-llama", 2, 4), 0.3)
    for mask in masks.heads.values():
        per_group = mask.view(2, 4).sum(1).tolist()
        assert all(count in (0, 4) for count in per_group), per_group
