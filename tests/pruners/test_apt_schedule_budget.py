"""APT schedule (cubic keep ratio, events, mask movement) and budget search."""
from __future__ import annotations

import math

import pytest
import torch

from lmprune.arch import describe
from lmprune.errors import LmpruneError
from lmprune.pruners.apt_budget import (bert_like_costs, model_costs,
                                        proportional_random_salience, select_within_budget)
from lmprune.pruners.apt_schedule import keep_ratio, move_masks, pruning_events
from lmprune.structures.counting import hidden_cost
from lmprune.zoo import build_tiny

# ---------------------------------------------------------------- schedule


def test_cubic_hand_values():
    # start 200, stop 1000, final 0.4: keep = 0.4 + 0.6 (1 - (t-200)/800)^3
    args = dict(schedule="cubic", start=200, stop=1000, total=1200, final=0.4)
    assert keep_ratio(0, **args) == 1.0
    assert keep_ratio(199, **args) == 1.0
    assert keep_ratio(200, **args) == pytest.approx(1.0)
    assert keep_ratio(600, **args) == pytest.approx(0.4 + 0.6 * 0.125)  # half way: 0.475
    assert keep_ratio(400, **args) == pytest.approx(0.4 + 0.6 * 0.75 ** 3)  # 0.653125
    assert keep_ratio(1000, **args) == pytest.approx(0.4)
    assert keep_ratio(1100, **args) == pytest.approx(0.4)


def test_cubic_is_monotone_non_increasing():
    values = [keep_ratio(t, "cubic", 10, 110, 200, 0.3) for t in range(0, 200)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_other_schedules_hand_values():
    common = dict(start=200, stop=1000, total=2000, final=0.5)
    assert keep_ratio(999, "late", **common) == 1.0
    assert keep_ratio(1000, "late", **common) == 0.5
    assert keep_ratio(0, "gradual", **common) == pytest.approx(1.0)
    assert keep_ratio(1000, "gradual", **common) == pytest.approx(0.5 + 0.5 * 0.125)  # 0.5625
    assert keep_ratio(2000, "gradual", **common) == pytest.approx(0.5)
    assert keep_ratio(0, "oneshot", **common) == 0.5
    assert keep_ratio(1500, "oneshot", **common) == 0.5
    assert keep_ratio(1999, "after", **common) == 1.0  # dense until training ends
    assert keep_ratio(2000, "after", **common) == 0.5
    assert all(keep_ratio(t, "none", **common) == 1.0 for t in (0, 500, 5000))


def test_schedule_errors():
    with pytest.raises(LmpruneError, match="schedule"):
        keep_ratio(0, "linear", 0, 10, 10, 0.5)
    with pytest.raises(LmpruneError, match="stop"):
        keep_ratio(0, "cubic", 10, 10, 20, 0.5)
    with pytest.raises(LmpruneError, match="final"):
        keep_ratio(0, "cubic", 0, 10, 20, 0.0)


def test_pruning_events_spacing():
    assert pruning_events(200, 1100, 10) == [200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100]
    assert pruning_events(0, 10, 3) == [0, 5, 10]
    assert pruning_events(0, 10, 4) == [0, 3, 7, 10]  # 0, 3.33, 6.67, 10 rounded
    assert pruning_events(5, 50, 1) == [50]
    assert pruning_events(0, 2, 10) == [0, 1, 2]  # duplicates dropped
    with pytest.raises(LmpruneError):
        pruning_events(0, 10, 0)


def test_move_masks_reaches_binary_exactly():
    target = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0])
    mask = torch.tensor([1.0, 1.0, 0.37, 0.0, 0.995])
    first = move_masks(mask, target, 0.01)
    assert torch.allclose(first, torch.tensor([0.99, 1.0, 0.36, 0.01, 1.0]))
    for _ in range(math.ceil(1 / 0.01)):
        mask = move_masks(mask, target, 0.01)
        assert torch.all((mask >= 0) & (mask <= 1))
    assert torch.equal(mask, target)  # exact, no float residue
    assert torch.equal(move_masks(torch.full((3,), 0.5), torch.tensor([0.0, 1.0, 0.0]), 1.0),
                       torch.tensor([0.0, 1.0, 0.0]))


@pytest.mark.parametrize("step", [0.3, 0.01, 0.003, 0.001])
def test_move_masks_binary_after_ceil_inverse_step_calls(step):
    gen = torch.Generator().manual_seed(3)
    mask = torch.rand(200, generator=gen)
    target = (torch.rand(200, generator=gen) > 0.5).float()
    for _ in range(math.ceil(1 / step)):
        mask = move_masks(mask, target, step)
    assert torch.equal(mask, target)


def test_move_masks_errors():
    with pytest.raises(LmpruneError):
        move_masks(torch.ones(3), torch.tensor([0.0, 0.5, 1.0]), 0.1)
    with pytest.raises(LmpruneError):
        move_masks(torch.ones(3), torch.ones(4), 0.1)

# ---------------------------------------------------------------- budget search


def _kept_cost(masks, costs, saliences):
    total = 0.0
    for kind, mask in masks.items():
        sal = saliences[kind]
        m2 = mask.reshape(1, -1) if sal.dim() == 1 else mask
        c = torch.as_tensor(costs[kind], dtype=torch.float64)
        if c.numel() == 1:
            c = c.reshape(1, 1)
        elif c.dim() == 1 and c.numel() == m2.shape[0]:
            c = c[:, None]
        else:
            c = c.reshape(m2.shape)
        total += float((m2.double() * torch.broadcast_to(c, m2.shape)).sum())
    return total


def _random_case(gen):
    saliences, costs = {}, {}
    for kind in ("heads", "neurons", "hidden")[: int(torch.randint(1, 4, (1,), generator=gen))]:
        sites = 1 if kind == "hidden" else int(torch.randint(1, 4, (1,), generator=gen))
        units = int(torch.randint(1, 9, (1,), generator=gen))
        shape = (units,) if kind == "hidden" else (sites, units)
        saliences[kind] = torch.rand(shape, generator=gen)
        if kind == "neurons":  # per-site integer costs
            costs[kind] = torch.randint(1, 20, (sites,), generator=gen).double()
        else:
            costs[kind] = float(torch.randint(1, 40, (1,), generator=gen))
    return saliences, costs


def _min_cost(saliences, costs, round_to=None):
    """Cost of the mandatory units: min(width, r) per site (costs uniform within a site)."""
    round_to = round_to or {}
    total = 0.0
    for kind, sal in saliences.items():
        s2 = sal.reshape(1, -1) if sal.dim() == 1 else sal
        m = min(s2.shape[1], round_to.get(kind, 1))
        c = torch.as_tensor(costs[kind], dtype=torch.float64).reshape(-1)
        c = c.expand(s2.shape[0]) if c.numel() == 1 else c
        total += float(m * c.sum())
    return total


def test_budget_never_exceeded_and_keeps_one_per_site():
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        saliences, costs = _random_case(gen)
        full = _kept_cost({k: torch.ones_like(v) for k, v in saliences.items()}, costs, saliences)
        low = _min_cost(saliences, costs)
        budget = low + float(torch.rand(1, generator=gen)) * (full - low)
        masks = select_within_budget(saliences, costs, budget)
        assert _kept_cost(masks, costs, saliences) <= budget
        for kind, mask in masks.items():
            assert mask.shape == saliences[kind].shape
            assert set(mask.unique().tolist()) <= {0.0, 1.0}
            m2 = mask.reshape(1, -1) if mask.dim() == 1 else mask
            assert torch.all(m2.sum(dim=1) >= 1)


def test_budget_optimal_among_prefixes_by_enumeration():
    """Without min-keep, the result equals the best feasible density-sorted prefix."""
    gen = torch.Generator().manual_seed(1)
    for _ in range(100):
        saliences, costs = _random_case(gen)
        units = []  # (density, salience, cost, kind, flat index)
        for kind, sal in saliences.items():
            s2 = sal.reshape(1, -1) if sal.dim() == 1 else sal
            c = torch.as_tensor(costs[kind], dtype=torch.float64)
            c2 = c.reshape(-1, 1).expand(s2.shape) if c.numel() == s2.shape[0] else c.expand(s2.shape)
            for flat, (s, cc) in enumerate(zip(s2.reshape(-1).tolist(), c2.reshape(-1).tolist())):
                units.append((s / cc, s, cc, kind, flat))
        units.sort(key=lambda u: -u[0])
        full = sum(u[2] for u in units)
        budget = float(torch.rand(1, generator=gen)) * full
        best, best_sal = 0, -1.0
        for n in range(len(units) + 1):  # enumerate every prefix
            prefix = units[:n]
            if sum(u[2] for u in prefix) <= budget and sum(u[1] for u in prefix) > best_sal:
                best, best_sal = n, sum(u[1] for u in prefix)
        masks = select_within_budget(saliences, costs, budget, min_keep=0)
        got = sum(float((masks[k].reshape(-1).double() * saliences[k].reshape(-1).double()).sum())
                  for k in masks)
        assert got == pytest.approx(best_sal)
        assert int(sum(m.sum() for m in masks.values())) == best


def test_budget_hand_example():
    # densities: heads [4/2, 1/2] -> 2, 0.5; neurons [3/1, 0.2/1] -> 3, 0.2
    sal = {"heads": torch.tensor([[4.0, 1.0]]), "neurons": torch.tensor([[3.0, 0.2]])}
    costs = {"heads": 2.0, "neurons": 1.0}
    masks = select_within_budget(sal, costs, budget=3.5, min_keep=0)  # neuron0 (1) + head0 (2)
    assert masks["heads"].tolist() == [[1.0, 0.0]] and masks["neurons"].tolist() == [[1.0, 0.0]]
    masks = select_within_budget(sal, costs, budget=5.0, min_keep=0)  # + head1 (2)
    assert masks["heads"].tolist() == [[1.0, 1.0]] and masks["neurons"].tolist() == [[1.0, 0.0]]


def test_budget_rounding():
    gen = torch.Generator().manual_seed(2)
    for _ in range(100):
        sites, width, r = 3, int(torch.randint(5, 17, (1,), generator=gen)), 4
        sal = {"neurons": torch.rand(sites, width, generator=gen)}
        costs = {"neurons": torch.randint(1, 5, (sites,), generator=gen).double()}
        low = _min_cost(sal, costs, {"neurons": r})
        full = float(width * costs["neurons"].sum())
        budget = low + float(torch.rand(1, generator=gen)) * (full - low)
        masks = select_within_budget(sal, costs, budget, round_to={"neurons": r})
        assert _kept_cost(masks, costs, sal) <= budget
        counts = masks["neurons"].sum(dim=1).long().tolist()
        assert all(c % r == 0 or c == width for c in counts), counts
        assert all(c >= min(r, width) for c in counts)
        # kept units of a site are its densest (highest salience: uniform cost per site)
        for i in range(sites):
            kept = sal["neurons"][i][masks["neurons"][i] == 1]
            dropped = sal["neurons"][i][masks["neurons"][i] == 0]
            if len(kept) and len(dropped):
                assert kept.min() >= dropped.max()


def test_budget_rounding_hand_example():
    # one site of 8 equal-cost units, r = 4: budget for 6 -> round down to 4
    sal = {"heads": torch.arange(8, 0, -1).float().reshape(1, 8)}
    masks = select_within_budget(sal, {"heads": 1.0}, 6.0, round_to={"heads": 4})
    assert masks["heads"].tolist() == [[1, 1, 1, 1, 0, 0, 0, 0]]
    masks = select_within_budget(sal, {"heads": 1.0}, 8.0, round_to={"heads": 4})
    assert masks["heads"].sum() == 8


def test_budget_errors():
    sal = {"heads": torch.rand(2, 3)}
    with pytest.raises(LmpruneError, match="budget"):
        select_within_budget(sal, {"heads": 10.0}, 5.0)  # two mandatory heads cost 20
    with pytest.raises(LmpruneError, match="kinds"):
        select_within_budget(sal, {"neurons": 1.0}, 5.0)
    with pytest.raises(LmpruneError, match="cost"):
        select_within_budget(sal, {"heads": torch.ones(5)}, 5.0)
    empty = select_within_budget(sal, {"heads": 10.0}, 5.0, min_keep=0)
    assert empty["heads"].sum() == 0

# ---------------------------------------------------------------- costs


def test_bert_base_costs_by_hand():
    costs = bert_like_costs(hidden=768, heads=12, ffn=3072, layers=12)
    assert costs["heads"] == 196_608  # 4 * 768^2 / 12
    assert costs["neurons"] == 1_536  # 2 * 768
    assert costs["hidden"] == 110_592  # 12 * (4 * 768 + 2 * 3072)
    # the whole prunable body: 12 * (12 heads + 3072 neurons) at these costs = 12 * 4d^2 + 12 * 2 d d_ff
    body = 12 * (12 * costs["heads"] + 3072 * costs["neurons"])
    assert body == 12 * (4 * 768 ** 2 + 2 * 768 * 3072) == 84_934_656


def test_model_costs_tiny_bert():
    model = build_tiny("tiny-bert")  # hidden 32, 4 heads (head_dim 8), FFN 64, 2 layers
    structure = describe(model)
    costs = model_costs(model, structure)
    # head: 8 rows of q, k, v (32 weights + bias each) + 8 columns of o (32): 8 * (3*33 + 32)
    assert costs["heads"].tolist() == [1048.0, 1048.0]
    # neuron: one row of intermediate (32 + bias) + one column of output (32)
    assert costs["neurons"].tolist() == [65.0, 65.0]
    assert costs["hidden"] == float(hidden_cost(model, structure))
    masks = select_within_budget({"heads": torch.rand(2, 4), "neurons": torch.rand(2, 64)},
                                 {"heads": costs["heads"], "neurons": costs["neurons"]},
                                 budget=0.5 * (2 * 4 * 1048 + 2 * 64 * 65))
    assert masks["heads"].shape == (2, 4) and masks["neurons"].shape == (2, 64)


def test_random_salience_keeps_every_kind_in_proportion_at_bert_base_size():
    """12 layers x 12 heads and 12 x 3072 neurons with BERT-base costs (a head is 768/2 times
    dearer than a neuron): the kept fractions of heads and neurons agree within one head.
    (At low keep ratios the one head every layer must keep adds heads: min_keep=0 there.)"""
    costs = bert_like_costs(768, 12, 3072, 12)
    costs = {"heads": costs["heads"], "neurons": costs["neurons"]}
    full = 144 * costs["heads"] + 12 * 3072 * costs["neurons"]
    shapes = {"heads": (12, 12), "neurons": (12, 3072)}
    for seed, keep, min_keep in [(0, 0.4, 1), (1, 0.6, 1), (2, 0.15, 0)]:
        gen = torch.Generator().manual_seed(seed)
        sal = proportional_random_salience(shapes, costs, gen)
        masks = select_within_budget(sal, costs, keep * full, min_keep=min_keep)
        heads, neurons = float(masks["heads"].mean()), float(masks["neurons"].mean())
        assert abs(heads - neurons) <= 1 / 144 + 1e-9
        assert abs(neurons - keep) <= 1 / 144
        assert _kept_cost(masks, costs, sal) <= keep * full


def test_random_salience_picks_units_uniformly():
    """Over many draws every unit is kept about as often as any other (no index bias)."""
    shapes, costs = {"heads": (2, 4), "neurons": (2, 16)}, {"heads": 8.0, "neurons": 1.0}
    counts = {k: torch.zeros(s) for k, s in shapes.items()}
    draws = 400
    for seed in range(draws):
        sal = proportional_random_salience(shapes, costs, torch.Generator().manual_seed(seed))
        masks = select_within_budget(sal, costs, 0.5 * (8 * 8 + 32), min_keep=0)
        for k in counts:
            counts[k] += masks[k]
    for k, c in counts.items():
        freq = c / draws
        assert torch.all((freq - 0.5).abs() < 0.12), (k, freq)  # binomial sd 0.025
