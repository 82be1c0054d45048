"""benchmarks/apt_base/aggregate.py: the seed table and issue 11's verdicts from results."""
from __future__ import annotations

import subprocess
import sys

from bench_scripts import BENCHMARKS

SCRIPT = BENCHMARKS / "apt_base" / "aggregate.py"


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_help_and_a_clear_error_for_directories_without_results(tmp_path):
    out = _run("--help")
    assert out.returncode == 0 and "Mean and spread over seeds" in out.stdout
    out = _run(tmp_path / "nothing")
    assert out.returncode == 2 and "no results.json in" in out.stderr
    assert "Traceback" not in out.stderr
