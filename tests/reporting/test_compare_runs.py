"""load_run, compare_runs (references, relative accuracy, per-method means), write_comparison."""
from __future__ import annotations

import csv
import json

import pytest
from compare_fakes import fake_run, write_run

from lmprune.errors import LmpruneError
from lmprune.reporting.compare import (compare_runs, format_row, load_run,
                                       relative_accuracy_by_method, table_columns,
                                       write_comparison)


def two_tasks():
    """ft: A 0.80, B 0.90. apt: A 0.76 (95%), B 0.81 (90%). lora: A 0.72 and 0.80 (90%, 100%;
    two seeds), B 0.90 (100%)."""
    return [fake_run("ft", "A", 0.80), fake_run("ft", "B", 0.90),
            fake_run("apt", "A", 0.76), fake_run("apt", "B", 0.81),
            fake_run("lora", "A", 0.72, seed=0), fake_run("lora", "A", 0.80, seed=1),
            fake_run("lora", "B", 0.90)]


def test_the_ft_run_of_the_same_task_is_the_reference():
    rows = compare_runs(two_tasks())
    # grouped by task in order of appearance, the ft run first
    assert [(r["method"], r["task"], r["seed"]) for r in rows] == [
        ("ft", "A", 0), ("apt", "A", 0), ("lora", "A", 0), ("lora", "A", 1),
        ("ft", "B", 0), ("apt", "B", 0), ("lora", "B", 0)]
    assert [r["reference"] for r in rows] == [0.80] * 4 + [0.90] * 3
    assert {r["reference_from"] for r in rows} == {"ft"}
    expected = [1.0, 0.95, 0.90, 1.0, 1.0, 0.90, 1.0]
    assert [r["relative_accuracy"] for r in rows] == pytest.approx(expected)


def test_ft_runs_come_first_in_their_group_whatever_the_input_order():
    runs = [fake_run("apt", "B", 0.5), fake_run("apt", "A", 0.5), fake_run("ft", "A", 0.5)]
    assert [(r["method"], r["task"]) for r in compare_runs(runs)] == [
        ("apt", "B"), ("ft", "A"), ("apt", "A")]


def test_relative_accuracy_per_method_is_the_mean_over_tasks_of_the_per_task_mean():
    summary = relative_accuracy_by_method(compare_runs(two_tasks()))
    assert [(s["method"], s["tasks"]) for s in summary] == [("ft", 2), ("apt", 2), ("lora", 2)]
    # apt: (0.95 + 0.90) / 2; lora: ((0.90 + 1.0) / 2 + 1.0) / 2, not (0.9 + 1 + 1) / 3
    got = [s["relative_accuracy"] for s in summary]
    assert got == pytest.approx([1.0, 0.925, 0.975])


def test_references_are_per_model_and_several_ft_seeds_are_averaged():
    runs = [fake_run("ft", "A", 0.70, model="small"), fake_run("ft", "A", 0.80, model="big"),
            fake_run("ft", "A", 0.90, model="big", seed=1), fake_run("apt", "A", 0.68,
                                                                       model="big")]
    rows = compare_runs(runs)
    assert rows[0]["reference"] == 0.70
    assert rows[3]["reference"] == pytest.approx(0.85)
    assert rows[3]["reference_from"] == "ft (mean of 2)"
    assert rows[3]["relative_accuracy"] == pytest.approx(0.8)


def test_without_an_ft_run_there_is_no_relative_accuracy():
    rows = compare_runs([fake_run("apt", "A", 0.76)])
    assert rows[0]["reference"] is None and rows[0]["relative_accuracy"] is None
    summary = relative_accuracy_by_method(rows)
    assert summary == [{"model": "m", "method": "apt", "tasks": 0, "relative_accuracy": None}]


def test_an_explicit_reference_overrides_the_ft_run():
    runs = [fake_run("ft", "A", 0.80), fake_run("apt", "A", 0.76)]
    rows = compare_runs(runs, reference=0.95)
    assert [r["relative_accuracy"] for r in rows] == pytest.approx([0.80 / 0.95, 0.8])
    assert rows[1]["reference_from"] == "given"
    other = dict(fake_run("ft", "A", 0.5), run_dir="runs/ft-long")
    rows = compare_runs(runs, reference=other)
    assert rows[1]["relative_accuracy"] == pytest.approx(1.52)
    assert rows[1]["reference_from"] == "run ft-long"


def test_an_explicit_reference_run_of_another_task_is_refused():
    with pytest.raises(LmpruneError, match="not of the same task and metric as apt/m/B"):
        compare_runs([fake_run("apt", "B", 0.8)], reference=fake_run("ft", "A", 0.9))
    with pytest.raises(LmpruneError, match="no runs to compare"):
        compare_runs([])


def test_time_to_accuracy_is_recomputed_against_the_reference():
    curve = [{"step": 0, "seconds": 0.0, "metric": 0.5, "keep_ratio": 1.0},
             {"step": 10, "seconds": 10.0, "metric": 0.77, "keep_ratio": 0.7},
             {"step": 20, "seconds": 20.0, "metric": 0.78, "keep_ratio": 0.4}]
    stored = {"reference": 0.93, "fraction": 0.97, "target": 0.9021, "seconds": 99.0}
    apt = fake_run("apt", "A", 0.78, curve=curve, time_to_accuracy=stored)
    rows = compare_runs([fake_run("ft", "A", 0.80), apt])
    # target 0.97 * 0.80 = 0.776: 0.77 at 10 s is short of it, 0.78 at 20 s reaches it
    assert rows[1]["tta_seconds"] == 20.0 and rows[1]["tta_reference"] == 0.80
    assert compare_runs([apt], reference=0.95)[0]["tta_seconds"] is None  # 0.9215 never
    alone = compare_runs([apt])[0]  # no reference: the run's recorded value
    assert (alone["tta_seconds"], alone["tta_reference"]) == (99.0, 0.93)


def test_never_reached_is_a_lower_bound_not_a_time():
    curve = [{"step": 0, "seconds": 0.0, "metric": 0.5, "keep_ratio": 1.0},
             {"step": 20, "seconds": 42.5, "metric": 0.6, "keep_ratio": 0.4}]
    rows = compare_runs([fake_run("ft", "A", 0.80),
                         fake_run("lora-prune", "A", 0.6, curve=curve, train_seconds=42.5)])
    assert rows[1]["tta_seconds"] is None and rows[1]["tta_lower_bound"] == 42.5
    assert format_row(rows[1])["tta_seconds"] == "> 42.5 s (not reached)"


def test_pipeline_memory_column_for_runs_that_build_on_others():
    gpu = {"kind": "cuda_max_allocated", "label": "GPU peak"}
    own, whole = {"mb": 700.0, **gpu}, {"mb": 990.0, **gpu}
    upstream = [{"role": "init_from", "run": "runs/lora", "train_seconds": 6.0, "memory": whole}]
    rows = compare_runs([fake_run("ft", "A", 0.8, memory={"train": whole}),
                         fake_run("lora-prune", "A", 0.78, upstream=upstream,
                                  memory={"train": own, "pipeline": whole})])
    assert (rows[1]["peak_train_mb"], rows[1]["peak_pipeline_mb"]) == (700.0, 990.0)
    assert rows[0]["peak_pipeline_mb"] == 990.0  # no upstream: its own stage is the pipeline
    headers = [h for _, h in table_columns(rows)]
    assert headers[-2:] == ["PEAK TRAIN MEM", "PIPELINE MEM"]
    assert "PIPELINE MEM" not in [h for _, h in table_columns(rows[:1])]


def test_throughput_speedup_and_memory():
    inference = {"32": {"samples_per_s": 300.0, "latency_ms": 106.7}, "128": {
        "samples_per_s": 400.0}, "seq_len": 128, "device": "cpu"}
    dense = {"32": {"samples_per_s": 200.0}, "seq_len": 128, "device": "cpu"}
    memory = {"train": {"mb": 812.4, "kind": "cuda_max_allocated", "label": "GPU peak"}}
    run = fake_run("apt", "A", 0.76, inference=inference, dense_inference=dense, memory=memory)
    row = compare_runs([run])[0]
    assert row["throughput_bs32"] == 300.0 and row["speedup_bs32"] == 1.5
    assert row["throughput_bs128"] == 400.0 and row["speedup_bs128"] is None
    assert (row["peak_train_mb"], row["peak_train_kind"]) == (812.4, "cuda_max_allocated")
    text = format_row(row)
    assert text["throughput_bs32"] == "300/s (1.50x)" and text["throughput_bs128"] == "400/s"
    assert text["peak_train_mb"] == "812 MB GPU"
    assert text["kept_params_ratio"] == "40.0%" and text["train_seconds"] == "100.0 s"


def test_load_run_reads_a_directory_or_its_metrics_file(tmp_path):
    directory = write_run(tmp_path / "apt-a", fake_run("apt", "A", 0.76))
    run = load_run(directory)
    assert run["method"] == "apt" and run["run_dir"] == str(directory)
    assert load_run(directory / "metrics.json")["run_dir"] == str(directory)


def test_load_run_errors(tmp_path):
    with pytest.raises(LmpruneError, match="does not exist"):
        load_run(tmp_path / "nowhere")
    with pytest.raises(LmpruneError, match="is not a run directory: it has no metrics.json"):
        load_run(tmp_path)
    (tmp_path / "comparison.csv").write_text("run,method\n")
    with pytest.raises(LmpruneError, match="is a file, not a run directory"):
        load_run(tmp_path / "comparison.csv")
    (tmp_path / "metrics.json").write_text('{"method": ')
    with pytest.raises(LmpruneError, match="is not valid JSON"):
        load_run(tmp_path)
    (tmp_path / "metrics.json").write_text("[1, 2]")
    with pytest.raises(LmpruneError, match="holds a list"):
        load_run(tmp_path)
    prune_run = {"method": "taylor", "model": "smollm2-135m", "sparsity": 0.2}
    (tmp_path / "metrics.json").write_text(json.dumps(prune_run))
    with pytest.raises(LmpruneError, match="lacks task, metric_name, metric"):
        load_run(tmp_path)


def test_write_comparison_markdown_and_csv(tmp_path):
    rows = compare_runs(two_tasks())
    out = write_comparison(rows, tmp_path / "report" / "comparison.md")
    text = out.read_text()
    assert text.startswith("# Comparison of 7 run(s)")
    assert "| apt/m/A | apt | m | A | accuracy 0.7600 | 95.0% | 40.0% | 100.0 s |" in text
    assert "| m | lora | 2 | 97.5% |" in text
    assert "A: 0.8 (ft)" in text
    with (tmp_path / "report" / "comparison.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 7 and table[1]["method"] == "apt"
    assert float(table[1]["relative_accuracy"]) == pytest.approx(0.95)
    with pytest.raises(LmpruneError, match="markdown file"):
        write_comparison(rows, tmp_path / "comparison.csv")
