"""APT's exact body count with hidden channels, and the budget search that uses it."""
from __future__ import annotations

import pytest
import torch

from lmprune.arch import describe
from lmprune.pruners.apt_budget import bert_like_costs, select_within_budget
from lmprune.pruners.apt_cost import CostModel, kept_counts, round_bilinear, select_bilinear
from lmprune.structures.counting import count_parameters
from lmprune.structures.masks import Masks
from lmprune.structures.removal import remove
from lmprune.zoo import build_tiny


def _bert():
    torch.manual_seed(0)
    return build_tiny("tiny-bert", "sequence-classification")


def _random_keep(structure, generator, hidden=True) -> dict:
    heads = (torch.rand(len(structure.attention), 4, generator=generator) < 0.6).float()
    neurons = (torch.rand(len(structure.ffn), 64, generator=generator) < 0.5).float()
    heads[:, 0] = neurons[:, 0] = 1
    out = {"heads": heads, "neurons": neurons}
    if hidden:
        out["hidden"] = (torch.rand(structure.hidden.size, generator=generator) < 0.7).float()
        out["hidden"][0] = 1
    return out


def _remove(model, structure, keep):
    masks = Masks(heads={s.name: keep["heads"][i] for i, s in enumerate(structure.attention)},
                  neurons={s.name: keep["neurons"][i] for i, s in enumerate(structure.ffn)},
                  hidden=keep.get("hidden"))
    return remove(model, masks, structure)


def test_the_cost_model_is_the_body_count_of_any_pruned_bert():
    model = _bert()
    structure = describe(model)
    cost = CostModel.of(model, structure)
    assert cost.total() == count_parameters(model).body
    d, layers = structure.hidden.size, len(structure.ffn)
    apt = bert_like_costs(d, 4, 64, layers)  # APT's per-unit costs, weights only
    units = cost.unit_costs()
    assert float(units["heads"][0]) == apt["heads"] + 3 * 8  # + q, k, v biases
    assert float(units["neurons"][0]) == apt["neurons"] + 1  # + the up bias
    # + the o / FFN-out bias entries and the two LayerNorms per layer, + the embedding norm
    assert units["hidden"] == apt["hidden"] + layers * 6 + 2
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        keep = _random_keep(structure, g)
        pruned = _remove(_bert(), structure, keep)
        assert cost.total(**kept_counts(keep)) == count_parameters(pruned).body


def test_bilinear_search_fits_the_budget_and_fills_it():
    model = _bert()
    structure = describe(model)
    cost = CostModel.of(model, structure)
    g = torch.Generator().manual_seed(0)
    sal = {"heads": torch.rand(2, 4, generator=g), "neurons": torch.rand(2, 64, generator=g),
           "hidden": torch.rand(32, generator=g)}
    available = {k: torch.ones_like(v) for k, v in sal.items()}
    budget = 0.4 * cost.total()
    keep = select_bilinear(sal, cost, budget, available)
    kept = cost.total(**kept_counts(keep))
    assert kept <= budget
    pruned = _remove(_bert(), structure, keep)
    assert count_parameters(pruned).body == kept
    # the longest prefix: the next unit, whatever its kind, would not fit
    units = cost.unit_costs(**kept_counts(keep))
    dearest = max(float(units["neurons"].max()), float(units["heads"].max()), units["hidden"])
    assert kept + dearest > budget
    # summing costs measured on the dense model keeps far less than the budget allows
    additive = select_within_budget(sal, cost.unit_costs(), budget)
    assert cost.total(**kept_counts(additive)) < 0.75 * kept


def test_dead_units_are_never_kept_and_whole_sites_may_go():
    model = _bert()
    cost = CostModel.of(model, describe(model))
    sal = {"heads": torch.tensor([[9.0, 1, 1, 1], [1, 1, 1, 1]]),
           "neurons": torch.rand(2, 64, generator=torch.Generator().manual_seed(2))}
    available = {"heads": torch.tensor([[0.0, 1, 1, 1], [1, 1, 1, 1]]),
                 "neurons": torch.ones(2, 64)}
    keep = select_bilinear(sal, cost, 0.5 * cost.total(), available)
    assert keep["heads"][0, 0] == 0  # the most salient head is dead
    assert torch.all(keep["heads"].sum(1) >= 1)  # min_keep=1: every site keeps one
    small = select_bilinear({"heads": torch.tensor([[1e-9] * 4, [1.0] * 4]),
                             "neurons": torch.ones(2, 64)}, cost, 0.3 * cost.total(),
                            {"heads": torch.ones(2, 4), "neurons": torch.ones(2, 64)},
                            min_keep=0)
    assert small["heads"][0].sum() == 0  # a layer's attention can go entirely


def test_rounding_keeps_multiples_within_the_budget():
    model = _bert()
    cost = CostModel.of(model, describe(model))
    g = torch.Generator().manual_seed(3)
    sal = {"heads": torch.rand(2, 4, generator=g), "neurons": torch.rand(2, 64, generator=g),
           "hidden": torch.rand(32, generator=g)}
    available = {k: torch.ones_like(v) for k, v in sal.items()}
    available["neurons"][1, :5] = 0  # dead units are not refilled
    budget = 0.45 * cost.total()
    keep = select_bilinear(sal, cost, budget, available)
    rounded = round_bilinear(keep, sal, cost, budget, available, {"neurons": 8})
    assert cost.total(**kept_counts(rounded)) <= budget
    widths = available["neurons"].sum(1)  # a site kept whole may have any width
    assert all(int(n) % 8 == 0 or n == w for n, w in zip(rounded["neurons"].sum(1), widths))
    assert rounded["neurons"].sum() >= keep["neurons"].sum() - 2 * 7
    assert torch.equal(rounded["hidden"], keep["hidden"])
    assert rounded["neurons"][1, :5].sum() == 0


def test_a_site_left_unaligned_by_an_earlier_event_is_rounded_too():
    """An earlier event (not rounded) left 59 and 45 of 64 neurons alive; a last event whose
    budget keeps every alive unit must not keep 59 and 45: the model would have those widths.
    Each becomes a multiple of 8 (56, 40), and nothing dead comes back."""
    model = _bert()
    cost = CostModel.of(model, describe(model))
    g = torch.Generator().manual_seed(4)
    sal = {"heads": torch.rand(2, 4, generator=g), "neurons": torch.rand(2, 64, generator=g)}
    available = {k: torch.ones_like(v) for k, v in sal.items()}
    available["neurons"][0, :5] = 0
    available["neurons"][1, :19] = 0
    budget = cost.total(**kept_counts(available))  # everything alive fits
    keep = select_bilinear(sal, cost, budget, available)
    assert keep["neurons"].sum(1).tolist() == [59, 45]
    rounded = round_bilinear(keep, sal, cost, budget, available, {"neurons": 8})
    assert rounded["neurons"].sum(1).tolist() == [56, 40]
    assert rounded["neurons"][0, :5].sum() == 0 and rounded["neurons"][1, :19].sum() == 0
    assert cost.total(**kept_counts(rounded)) <= budget
    full = {k: torch.ones_like(v) for k, v in sal.items()}  # a dense site kept whole stays
    kept_all = select_bilinear(sal, cost, cost.total(), full)
    assert round_bilinear(kept_all, sal, cost, cost.total(), full, {"neurons": 8})[
        "neurons"].sum(1).tolist() == [64, 64]


def test_too_small_a_budget_is_an_error():
    model = _bert()
    cost = CostModel.of(model, describe(model))
    sal = {"heads": torch.ones(2, 4), "neurons": torch.ones(2, 64)}
    with pytest.raises(Exception, match="budget"):
        select_bilinear(sal, cost, 10.0, {k: torch.ones_like(v) for k, v in sal.items()})
