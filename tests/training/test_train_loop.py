"""The fine-tuning loop's pieces: schedule, clock, optimizer rebuild, APT's small parts."""
from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from lmprune.training.apt_parts import equal_heads_per_group, grow_ranks
from lmprune.training.loop import Clock, build_optimizer, lr_factor, steps_for
from lmprune.training.method import TrainMethod
from lmprune.tuners.apt_adapter import apply_apt
from lmprune.zoo import build_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def test_lr_factor_warms_up_then_decays_to_zero():
    assert [lr_factor(s, 10, 2) for s in range(10)] == pytest.approx(
        [0.5, 1.0, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])
    assert lr_factor(0, 4, 0) == 1.0


def test_steps_for_rounds_up_and_caps():
    assert steps_for(100, 32, 1.0, None) == 4
    assert steps_for(100, 32, 2.5, None) == 10
    assert steps_for(100, 32, 3.0, 5) == 5


def test_clock_excludes_paused_time():
    clock = Clock()
    clock.start()
    time.sleep(0.05)
    with clock.paused():
        time.sleep(0.2)
    clock.stop()
    assert 0.04 <= clock.seconds < 0.2


def test_optimizer_rebuild_keeps_state_of_unchanged_tensors():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    method = TrainMethod()
    opt = build_optimizer(method, model, 1e-3, 0.0)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    model[1].weight = nn.Parameter(torch.zeros(2, 3))  # a tensor replaced (as by rank growth)
    new = build_optimizer(method, model, 1e-3, 0.0, previous=opt)
    assert new.state[model[0].weight]["exp_avg"] is opt.state[model[0].weight]["exp_avg"]
    assert model[1].weight not in new.state


def test_grow_ranks_top_half_uniform_and_cap():
    model = build_tiny("tiny-bert", "sequence-classification")
    adapters = apply_apt(model, ["q", "v"], r=2)
    size = sum(a.lora_A.numel() + a.lora_B.numel() for a in adapters.values())
    importance = {p: float(i) for i, p in enumerate(adapters)}
    added = grow_ranks(adapters, 2 * size, 64, importance, None)
    top = sorted(adapters, key=importance.get, reverse=True)[:len(adapters) // 2]
    assert added > 0
    assert all(adapters[p].rank > 2 for p in top)
    assert all(adapters[p].rank == 2 for p in adapters if p not in top)
    before = {p: a.rank for p, a in adapters.items()}
    grow_ranks(adapters, 100 * size, 5, None, None)  # uniform, capped at rank 5
    assert all(a.rank == max(5, before[p]) for p, a in adapters.items())
    assert grow_ranks(adapters, 1, 64, None, None) == 0


def test_equal_heads_per_group_keeps_best_heads_without_growing():
    keep = torch.tensor([1., 1., 1., 0., 1., 0., 0., 0.])
    score = torch.tensor([5., 4., 3., 2., 9., 1., 8., 0.])
    out = equal_heads_per_group(keep, score, group_size=4)
    assert out.tolist() == [1., 1., 0., 0., 1., 0., 1., 0.]
    assert torch.equal(equal_heads_per_group(keep, score, 1), keep)
