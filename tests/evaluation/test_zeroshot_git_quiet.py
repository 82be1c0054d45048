"""lm-eval's ``git describe`` must not print git's errors outside a repository (the demo)."""
from __future__ import annotations

import subprocess
import sys


def test_no_git_error_outside_a_repository(tmp_path):
    code = ("import lm_eval.evaluator as e; from lmprune.evaluation.zeroshot import "
            "_quiet_git_hash\nwith _quiet_git_hash():\n    print(repr(e.get_git_commit_hash()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env={"GIT_CEILING_DIRECTORIES": str(tmp_path.parent),
                                         "PATH": "/usr/bin:/bin",
                                         "PYTHONPATH": ":".join(sys.path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"
    assert "fatal" not in out.stderr
