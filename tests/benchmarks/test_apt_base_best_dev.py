"""benchmarks/apt_base/best_dev.py: best dev points beside final ones, APT at its final sparsity."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench_scripts import load


def _run(path: Path, final: float, curve: list[tuple[int, float, float]]) -> None:
    path.mkdir(parents=True)
    points = [{"step": 0, "metric": 0.4, "keep_ratio": 1.0, "phase": "start"}]
    points += [{"step": s, "metric": m, "keep_ratio": k, "phase": "train"} for s, m, k in curve]
    (path / "metrics.json").write_text(json.dumps({"metric": final, "curve": points}))


def test_apt_best_counts_only_points_at_its_final_keep_ratio(tmp_path):
    seed = tmp_path / "seed0"
    _run(seed / "ft", 0.80, [(10, 0.90, 1.0), (20, 0.85, 1.0), (30, 0.80, 1.0)])
    # APT's 0.95 comes before pruning ended (keep 0.7): not a point of the pruned model
    _run(seed / "apt", 0.78, [(10, 0.95, 0.7), (20, 0.81, 0.4), (30, 0.78, 0.4)])
    module = load("apt_base/best_dev.py")
    (row,) = module.rows([seed])
    assert row["reference"] == {"final": 0.80, "best": 0.90, "best_step": 10}
    assert row["method"] == {"final": 0.78, "best": 0.81, "best_step": 20}
    assert row["final_ratio"] == pytest.approx(0.975)
    assert row["best_ratio"] == pytest.approx(0.9)
    table = module.markdown([row])
    assert "| seed0 | 0.8000 | 0.9000 (10) | 0.7800 | 0.8100 (20) | 97.5% | 90.0% |" in table
    assert table.rstrip().endswith("| 97.5% | 90.0% |")


def test_a_run_without_points_at_its_final_ratio_is_an_error(tmp_path):
    _run(tmp_path / "ft", 0.8, [])
    module = load("apt_base/best_dev.py")
    with pytest.raises(SystemExit, match="no curve points"):
        module.best_and_final(tmp_path / "ft")
