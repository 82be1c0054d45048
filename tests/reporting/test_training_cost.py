"""Per-interval training cost (step time, memory, held tensors) in metrics.json, report and plot."""
from __future__ import annotations

import json

import pytest
import torch

from lmprune.cli.main import main
from lmprune.evaluation.memory import CPU_NOW_KIND, interval_peak, tensor_bytes
from lmprune.reporting.curves import plot_training_cost

pytestmark = pytest.mark.usefixtures("one_thread")


def _apt(tmp_path, *extra):
    out = tmp_path / "apt"
    assert main(["train", "--method", "apt", "--model", "tiny-bert", "--task", "foods",
                 "--sparsity", "0.6", "--out", str(out), "train.max_steps=24",
                 "train.max_train_samples=96", "train.max_eval_samples=16", "train.eval_every=4",
                 "train.measure=false", "train.progress=false", "apt.prune_start=2",
                 "apt.events=4", "train.batch_size=8", *extra]) == 0
    return out, json.loads((out / "metrics.json").read_text())


def test_an_apt_run_reports_its_cost_falling_with_compaction(tmp_path):
    out, m = _apt(tmp_path)
    cost = m["training_cost"]
    series = cost["series"]
    assert [p["step"] for p in series] == [4, 8, 12, 16, 20, 24]
    assert all(p["step_seconds"] > 0 and p["memory_kind"] == CPU_NOW_KIND for p in series)
    kinds = {e["kind"] for e in cost["events"]}
    assert kinds == {"pruning event", "compaction"}
    # the backbone shrinks while training (adapters grow): fewer parameters at the end
    assert series[-1]["params"] < series[0]["params"]
    assert (out / "training_cost.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "## Training cost along the run" in report and "training_cost.png" in report
    _, masked = _apt(tmp_path / "masked", "apt.compact=false")
    end = masked["training_cost"]["series"][-1]
    assert end["params"] > series[-1]["params"] and end["state_mb"] > series[-1]["state_mb"]
    assert {e["kind"] for e in masked["training_cost"]["events"]} == {"pruning event"}


def test_cpu_interval_memory_is_labelled_and_tensor_bytes_count_storages_once():
    assert interval_peak("cpu").kind == CPU_NOW_KIND
    a = torch.zeros(2**18)  # 1 MB of float32
    assert tensor_bytes([a, a, a[:10], None]) / 2**20 == pytest.approx(1.0)


def test_cost_plot_needs_points(tmp_path):
    with pytest.raises(Exception, match="no points"):
        plot_training_cost([], tmp_path / "x.png")
