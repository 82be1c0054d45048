"""The demo command end to end, in a real subprocess (the README's first command)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from lmprune.structures.plan import PruningPlan


@pytest.mark.slow
def test_demo_minilm_end_to_end(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lmprune", "demo", "--models", "minilm-l6", "--part", "structures",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("minilm-l6"))
    assert " yes " in row and " ok " in row and "remote-code" in row
    assert "22.71M" in row  # all-MiniLM-L6-v2 with a 2-label head
    saved = tmp_path / "minilm-l6"
    assert (saved / "config.json").exists() and (saved / "tokenizer.json").exists()
    plan = PruningPlan.load(saved)
    assert plan.meta["sparsity"] == 0.3 and len(plan.keep["heads"]) == 6


def test_demo_rejects_unknown_model(tmp_path, capsys):
    from lmprune.cli.main import main

    assert main(["demo", "--models", "minilm-l7", "--part", "structures", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'minilm-l7'" in err and "minilm-l6" in err
