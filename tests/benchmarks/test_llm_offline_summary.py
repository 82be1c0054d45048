"""benchmarks/llm_offline/summary.py --from-log: the table of a run whose results.json was lost
is rebuilt from the finished rows its log printed, progress bars and unfinished rows ignored."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SUMMARY = Path(__file__).resolve().parents[2] / "benchmarks" / "llm_offline" / "summary.py"

LOG = (
    "[bench] 0.20/taylor-element1/seed0\r"
    "taylor importance:  52%|#####     | 628/1200 [00:01<00:01, 472.29grad/s]\r"
    "[bench] 0.20/taylor-element1/seed0: removed 19.99%, ppl 83.00, recovered 82.00 (18 s)\n"
    "[bench] 0.20/taylor-element1/seed1: removed 19.99%, ppl 85.00, recovered 84.00 (15 s)\n"
    "[bench] 0.20/adapruner-tpe/seed0: removed 19.99%, ppl 80.00, recovered 79.00 (106 s)\n"
    "[bench] 0.20/adapruner-tpe/seed1: removed 19.99%, ppl 86.00 (99 s)\n"
    "[bench] 0.50/adapruner-tpe/seed0\n"  # started, never finished
)


def run(tmp_path: Path, log: str) -> subprocess.CompletedProcess:
    (tmp_path / "log.txt").write_text(log)
    return subprocess.run([sys.executable, str(SUMMARY), str(tmp_path / "out"), "--from-log",
                           str(tmp_path / "log.txt")], capture_output=True, text=True)


def test_rows_means_and_targets_from_a_log(tmp_path):
    done = run(tmp_path, LOG)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert sorted(results) == ["0.20/adapruner-tpe/seed0", "0.20/adapruner-tpe/seed1",
                               "0.20/taylor-element1/seed0", "0.20/taylor-element1/seed1"]
    row = results["0.20/taylor-element1/seed0"]
    assert row["removed_body"] == 0.1999 and row["ppl"] == 83.0
    assert row["ppl_recovered"] == 82.0 and row["row_seconds"] == 18.0
    assert "ppl_recovered" not in results["0.20/adapruner-tpe/seed1"]
    md = (tmp_path / "out" / "results.md").read_text()
    # means over seeds: Taylor (83 + 85) / 2 = 84.00, AdaPruner (80 + 86) / 2 = 83.00
    assert "| 20% | taylor-element1 | 2 | 19.99 ± 0.00 | 84.00 ± 1.41 |" in md
    assert "AdaPruner (TPE) 83.00 vs best Taylor (taylor-element1) 84.00: met" in md
    assert "0.50" not in json.dumps(results)


def test_a_log_without_finished_rows_is_an_error(tmp_path):
    done = run(tmp_path, "[bench] 0.20/adapruner-tpe/seed0\nTraceback ...\n")
    assert done.returncode != 0
    assert "no finished [bench] rows" in done.stderr


SPLIT = SUMMARY.with_name("split_seeds.py")


def test_split_seeds_gives_each_seed_its_rows_and_keeps_newer_ones(tmp_path):
    rows = {"_dense": {"ppl": 60.0},
            "0.20/taylor-element1/seed0": {"seed": 0, "ppl": 83.0},
            "0.20/taylor-element1/seed1": {"seed": 1, "ppl": 85.0},
            "0.50/taylor-element1/seed1": {"seed": 1, "ppl": 500.0}}
    (tmp_path / "r.json").write_text(json.dumps(rows))
    newer = tmp_path / "out" / "seed1" / "results.json"
    newer.parent.mkdir(parents=True)
    newer.write_text(json.dumps({"0.50/taylor-element1/seed1": {"seed": 1, "ppl": 400.0}}))
    done = subprocess.run([sys.executable, str(SPLIT), str(tmp_path / "r.json"),
                           str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    zero = json.loads((tmp_path / "out" / "seed0" / "results.json").read_text())
    one = json.loads(newer.read_text())
    assert set(zero) == {"_dense", "0.20/taylor-element1/seed0"}
    assert one["0.20/taylor-element1/seed1"]["ppl"] == 85.0
    assert one["0.50/taylor-element1/seed1"]["ppl"] == 400.0  # the newer file's row
    missing = subprocess.run([sys.executable, str(SPLIT), str(tmp_path / "nope.json"),
                              str(tmp_path / "out")], capture_output=True, text=True)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_confirmation_table_names_the_objective_choice_and_the_chosen_trial(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("llm_offline_summary", SUMMARY)
    summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary)
    trial = {"best_so_far": 1.0, "params": {}, "candidate": {}, "seconds": 0.1}
    history = [dict(trial, number=0, value=80.0, probe=83.0, confirm=90.0),
               dict(trial, number=1, value=79.5, probe=84.5, confirm=91.0),
               dict(trial, number=2, value=85.0, probe=88.0, confirm=None)]
    results = {"0.20/adapruner-tpe/seed0": {
        "target": 0.2, "variant": "adapruner-tpe", "seed": 0, "removed_body": 0.2, "ppl": 83.0,
        "prune_seconds": 5.0, "search": {"best_trial": 0, "search_best_trial": 1,
                                         "confirm_value": 90.0, "history": history}}}
    summary.write_outputs(results, tmp_path)
    md = (tmp_path / "results.md").read_text()
    assert "| 0.20/adapruner-tpe/seed0 | 1, 79.50, 84.50 | 0, 90.00, 83.00 |" in md
    results["0.20/adapruner-tpe/seed0"]["search"]["confirm_value"] = None  # no round: no table
    summary.write_outputs(results, tmp_path)
    assert "confirmation round" not in (tmp_path / "results.md").read_text()
