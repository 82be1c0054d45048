"""`lmprune compare` end to end on fake run directories."""
from __future__ import annotations

import json

import pytest

from lmprune.cli.main import main


def write_run(directory, method, task, metric, **extra):
    run = {"method": method, "model": "minilm-l6", "task": task, "sparsity": 0.6, "seed": 0,
           "metric_name": "accuracy", "metric": metric,
           "kept_params_ratio": 1.0 if method == "ft" else 0.4, "train_seconds": 120.0,
           "curve": [{"step": 0, "seconds": 0.0, "metric": 0.5, "keep_ratio": 1.0},
                     {"step": 100, "seconds": 60.0, "metric": metric, "keep_ratio": 0.4}],
           "memory": {"train": {"mb": 900.0, "kind": "cpu_rss_peak", "label": "process RSS"}},
           **extra}
    directory.mkdir(parents=True)
    (directory / "metrics.json").write_text(json.dumps(run))
    return str(directory)


@pytest.fixture
def runs(tmp_path):
    inference = {"2": {"samples_per_s": 50.0, "latency_ms": 40.0}, "seq_len": 16,
                 "device": "cpu"}
    dense = {"2": {"samples_per_s": 40.0, "latency_ms": 50.0}, "seq_len": 16, "device": "cpu"}
    return [write_run(tmp_path / "ft-foods", "ft", "foods", 0.80),
            write_run(tmp_path / "apt-foods", "apt", "foods", 0.76, inference=inference,
                      dense_inference=dense),
            write_run(tmp_path / "apt-news", "apt", "news", 0.70)]


def test_compare_prints_the_table_and_writes_the_report(capsys, tmp_path, runs):
    out = tmp_path / "cmp" / "comparison.md"
    code = main(["compare", *runs, "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0].split()[:6] == ["RUN", "METHOD", "MODEL", "TASK", "METRIC", "REL"]
    apt = next(line for line in lines if line.startswith("apt-foods"))
    # 0.76 / 0.80; the 97% target 0.776 is never reached; 50 / 40 samples/s
    assert "95.0%" in apt and "not reached" in apt and "50/s (1.25x)" in apt
    assert "900 MB CPU RSS" in apt
    news = next(line for line in lines if line.startswith("apt-news"))
    assert "accuracy 0.7000" in news and "%" not in news.split("accuracy 0.7000")[1][:12]
    summary = lines[lines.index("relative accuracy per method (mean over tasks):") + 1:]
    assert summary[0].split()[:3] == ["MODEL", "METHOD", "TASKS"]
    assert summary[2].split() == ["minilm-l6", "apt", "1", "95.0%"]  # news has no reference
    assert out.exists() and out.with_suffix(".csv").exists()
    assert f"written: {out} and {out.with_suffix('.csv')}" in stdout


def test_reference_as_number_or_run_directory(capsys, runs):
    assert main(["compare", runs[1], "--reference", "0.95"]) == 0
    assert "80.0%" in capsys.readouterr().out.splitlines()[1]  # 0.76 / 0.95
    assert main(["compare", runs[1], "--reference", runs[0]]) == 0
    assert "95.0%" in capsys.readouterr().out.splitlines()[1]


def test_bad_run_directories_exit_2_with_a_message(capsys, tmp_path, runs):
    assert main(["compare", runs[0], str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["compare", runs[1], "--reference", runs[2]]) == 2  # other task
    err = capsys.readouterr().err
    assert err.startswith("error: the reference run (news, accuracy) is not of the same task")
