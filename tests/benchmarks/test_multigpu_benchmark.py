"""benchmarks/multigpu --quick: the GPU benchmark's code paths on two CPU "devices" at tiny
shapes (the spread model is dispatched with accelerate's hooks; data parallel runs two gloo
processes), and the table it prints last."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "multigpu"
pytestmark = pytest.mark.usefixtures("one_thread")


def _module(name):
    sys.path.insert(0, str(BENCH))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(BENCH))


def test_spread_quick_records_every_step_and_equal_scores(tmp_path, capsys):
    assert _module("spread").main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "spread-tiny.json").read_text())
    assert result["devices"] == ["cpu", "cpu"] and result["params"] > 0
    for step in ("taylor_element1", "ri_step", "recovery_3_steps"):
        assert result[step]["seconds"] > 0 and result[step]["peak_gib"]
    assert len(result["recovery_3_steps"]["losses"]) == 3
    check = result["single_device"]["spread_vs_single"]
    assert check == {"max_rel_diff": 0.0, "same_kept_at_20pct": True}
    assert _module("table").main(str(tmp_path)) == 0
    table = (tmp_path / "results.md").read_text()
    assert "| tiny (0.0B, 2 dev) spread | Taylor element1 |" in table
    assert "same kept at 20%: yes" in capsys.readouterr().out
