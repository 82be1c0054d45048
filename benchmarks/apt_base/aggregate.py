"""Mean and spread over seeds of the apt_base results, and issue 11's targets on the means.

    python benchmarks/apt_base/aggregate.py                 # benchmarks/apt_base/results/seed*
    python benchmarks/apt_base/aggregate.py DIR [DIR ...]

The same table and target checks as benchmarks/apt_offline/aggregate.py (that script, run on
these directories).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apt_offline"))

import aggregate as offline  # noqa: E402  (benchmarks/apt_offline/aggregate.py)

if __name__ == "__main__":
    dirs = sys.argv[1:] or [str(p) for p in sorted(Path(__file__).parent.glob("results/seed*"))]
    sys.exit(offline.main(dirs, header="Targets (issue 11), on the means:", doc=__doc__))
