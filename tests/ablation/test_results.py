"""Numbers of the ablation table: quantities read from metrics.json, mean/std, noise test."""
from __future__ import annotations

import math

import pytest

from lmprune.ablation.metrics import Context, best_dev, extract, first_reaching
from lmprune.ablation.results import Cell, compare, delta_text, mean_std

CURVE = [  # a pruning run: dense points before the last event do not count
    {"step": 0, "seconds": 0.0, "metric": 0.50, "keep_ratio": 1.0},
    {"step": 10, "seconds": 2.0, "metric": 0.90, "keep_ratio": 1.0},
    {"step": 20, "seconds": 4.0, "metric": 0.70, "keep_ratio": 0.4},
    {"step": 30, "seconds": 6.0, "metric": 0.80, "keep_ratio": 0.4},
    {"step": 30, "seconds": 6.0, "metric": 0.82, "keep_ratio": 0.4},
]
TRAIN = {
    "metric_name": "accuracy", "metric": 0.82, "test_metrics": {"accuracy": 0.8},
    "kept_params_ratio": 0.4, "train_seconds": 6.0, "steps": 30, "curve": CURVE,
    "inference": {"32": {"samples_per_s": 300.0, "latency_ms": 10.0}, "seq_len": 128},
    "dense_inference": {"32": {"samples_per_s": 100.0, "latency_ms": 30.0}},
    "memory": {"train": {"mb": 812.5, "kind": "cuda_max_allocated"}},
}
PRUNE = {
    "params_removed_fraction": {"body": 0.2, "total": 0.15}, "seconds": {"prune": 3.5},
    "before": {"speed": [{"batch_size": 1, "tokens_per_s": 10.0, "ms_per_token": 100.0}]},
    "after": {"perplexity": {"austen": {"perplexity": 75.0}},
              "zero_shot": {"wordnet-defs": {"acc": 0.5, "acc_norm": 0.6}},
              "speed": [{"batch_size": 1, "tokens_per_s": 15.0, "ms_per_token": 80.0,
                         "peak_memory_mb": 900.0, "memory_kind": "cuda max_memory_allocated"}]},
    "memory": {"prune": {"mb": 1200.0, "kind": "cuda_max_allocated"}},
}


def values(metrics, recipe, keys, ctx=None):
    return {c.key: v for _, c, v in extract(metrics, recipe, keys, ctx or Context())}


def test_train_quantities_from_metrics_json():
    got = values(TRAIN, "train", ["task", "train_time", "step_throughput", "inference",
                                  "train_memory"])
    assert got == {"kept": 0.4, "dev": 0.82, "test": 0.8, "train_s": 6.0, "steps_per_s": 5.0,
                   "speedup_bs32": 3.0, "latency_bs32": pytest.approx(1 / 3),
                   "train_mem_mb": 812.5}


def test_convergence_counts_only_points_at_the_final_sparsity():
    assert best_dev(TRAIN) == 0.82  # not the dense 0.90
    # 97% of 0.8 = 0.776: the dense point at 2 s is ignored, the 0.80 at 6 s is the first
    got = values(TRAIN, "train", ["convergence"], Context(reference_best=0.8))
    assert (got["conv_s"], got["conv_steps"]) == (6.0, 30)
    assert first_reaching(CURVE, 0.6) == CURVE[2]
    never = values(TRAIN, "train", ["convergence"], Context(reference_best=0.9))
    assert never["conv_s"] is None and never["conv_steps"] is None


def test_prune_quantities_from_metrics_json():
    got = values(PRUNE, "prune", ["perplexity", "zero_shot", "prune_time", "inference",
                                  "gen_memory", "prune_memory"])
    assert got == {"removed": 0.2, "ppl_austen": 75.0, "zs_wordnet-defs": 0.6, "prune_s": 3.5,
                   "speedup_bs1": 1.5, "latency_bs1": 0.8, "gen_mem_mb": 900.0,
                   "prune_mem_mb": 1200.0}


def test_mean_std_delta_and_noise_by_hand():
    reference, variant = Cell([0.80, 0.82, 0.84]), Cell([0.70, 0.72, 0.74])
    assert reference.mean == pytest.approx(0.82) and reference.std == pytest.approx(0.02)
    comp = compare(variant, reference)
    # pooled std sqrt((0.02^2 + 0.02^2) / 2) = 0.02; noise 0.04 < |delta| 0.10
    assert comp.delta == pytest.approx(-0.10) and comp.noise == pytest.approx(0.04)
    assert comp.beyond is True
    close = compare(Cell([0.81, 0.83, 0.85]), reference)
    assert close.delta == pytest.approx(0.01) and close.beyond is False


def test_noise_needs_two_seeds_and_missing_values_are_counted():
    one = compare(Cell([0.7]), Cell([0.8]))
    assert one.delta == pytest.approx(-0.1) and one.noise is None and one.beyond is None
    partial = Cell([None, 4.0, 6.0])
    assert partial.present == [4.0, 6.0] and partial.mean == 5.0
    assert math.isclose(partial.std, math.sqrt(2))
    from lmprune.ablation.metrics import Column

    column = Column("conv_s", "time", ".1f", False)
    assert mean_std(partial, column, 3) == "5.0 ± 1.4 (2/3 seeds)"
    assert mean_std(Cell([None, None]), column, 2) == "not reached"
    assert delta_text(compare(Cell([3.0, 3.2]), Cell([5.0, 5.2])), column) == \
        "-2.0 (beyond noise)"
    assert compare(Cell([None]), Cell([1.0])).delta is None


def test_deterministic_quantities_have_zero_noise():
    comp = compare(Cell([0.40, 0.40]), Cell([0.41, 0.41]))
    assert comp.noise == 0.0 and comp.beyond is True
    assert compare(Cell([0.4, 0.4]), Cell([0.4, 0.4])).beyond is False
