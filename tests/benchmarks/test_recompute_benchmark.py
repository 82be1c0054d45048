"""benchmarks/recompute/run.py: each method trained plain and recomputing, in its own process,
side by side; what it writes and that the two agree."""
from __future__ import annotations

import json

import pytest

from bench_scripts import load

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_command_line_of_a_run_recomputes_only_in_recompute_mode(tmp_path):
    module = load("recompute/run.py")
    args = module.parse(["--out", str(tmp_path), "--model", "tiny-bert", "--steps", "8"])
    plain = module.command(args, "apt", "plain", tmp_path / "p")
    again = module.command(args, "apt", "recompute", tmp_path / "r")
    assert "--gradient-checkpointing" not in plain and "--gradient-checkpointing" in again
    assert "train.max_steps=8" in plain and "apt.prune_start=2" in plain
    assert [a for a in again if a != "--gradient-checkpointing"] == \
        [str(tmp_path / "r") if a == str(tmp_path / "p") else a for a in plain]


def test_bad_sizes_are_refused(tmp_path):
    module = load("recompute/run.py")
    with pytest.raises(SystemExit):
        module.parse(["--out", str(tmp_path), "--steps", "1"])
    with pytest.raises(SystemExit):
        module.parse(["--out", str(tmp_path), "--batch-size", "0"])


def test_a_tiny_run_writes_both_files_with_equal_losses(tmp_path):
    module = load("recompute/run.py")
    assert module.main(["--out", str(tmp_path), "--model", "tiny-bert", "--methods", "apt",
                        "--batch-size", "8", "--steps", "4", "--device", "cpu"]) == 0
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert [(r["method"], r["mode"]) for r in runs] == [("apt", "plain"), ("apt", "recompute")]
    plain, recompute = runs
    assert plain["last_loss"] == pytest.approx(recompute["last_loss"], rel=1e-6)
    assert plain["metric"] == recompute["metric"] and plain["peak_train_mb"] > 0
    assert "| apt |" in (tmp_path / "results.md").read_text()
    # a finished run is not run again
    (tmp_path / "apt-plain" / "marker").write_text("kept")
    assert module.main(["--out", str(tmp_path), "--model", "tiny-bert", "--methods", "apt",
                        "--batch-size", "8", "--steps", "4", "--device", "cpu"]) == 0
    assert (tmp_path / "apt-plain" / "marker").is_file()
