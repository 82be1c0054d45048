"""benchmarks/speed/run.py --quick: the GPU benchmark's code paths run on a CPU at tiny shapes,
its time budget skips (and records) what does not fit, and its reports are written."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

SPEED = Path(__file__).resolve().parents[2] / "benchmarks" / "speed"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def speed_run(tmp_path_factory):
    sys.path.insert(0, str(SPEED))
    try:
        import run
    finally:
        sys.path.remove(str(SPEED))
    out = tmp_path_factory.mktemp("speed")
    assert run.main(["--quick", "--out", str(out), "--sections", "encoder,micro,smollm2",
                     "--budget-s", "25", "--device", "cpu"]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_results_record_device_versions_and_settings(speed_run):
    out, results = speed_run
    meta = results["meta"]
    assert meta["device"] == "cpu" and meta["quick"] and meta["fast_mode"] == "static"
    assert meta["torch"] and meta["transformers"] and meta["settings"]["encoder"]["seq_len"] == 32
    assert results["bandwidth"]["bytes_per_s"] > 0
    report = (out / "results.md").read_text()
    assert report.startswith("# Speed benchmark results") and "### Encoder" in report


def test_measurements_carry_their_ideal_and_the_budget_records_skips(speed_run):
    _, results = speed_run
    variants = results["encoder"]["variants"]
    assert variants and all(v["ideal"]["flops"] > 1 for v in variants)
    assert {v["round_to"] for v in variants} <= {"auto", 1}
    micro = results["diagnostics"]
    assert {r["width"] for r in micro["gemm_up"]} == {344, 275, 272}
    measured = [r for r in results["decoders"]["smollm2-135m"]["dense"]["speeds"]]
    skipped = results.get("skipped", [])
    assert measured or skipped  # 25 s on a busy CPU: some of both, typically
    assert all(item["reason"].startswith("time budget") for item in skipped)
