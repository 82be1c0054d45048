"""Put a variant's APT rows beside the baselines of the same seeds, for aggregate.py.

A variant run (``device_run.sh --methods apt --set apt:apt.X=... apt:train.reference=...``)
holds APT's row only. This writes, per seed, a results.json with the main run's rows of every
other method (FT, LoRA, LoRA + prune, ...) and the variant's APT row, so that
``aggregate.py`` gives the variant's accuracy relative to FT (the main run's FT metric of
that seed, filled in where the variant's row has none) and its target checks:

    python benchmarks/apt_base/with_baselines.py MAIN VARIANT OUT
    python benchmarks/apt_base/aggregate.py OUT/seed*

MAIN and VARIANT hold ``seed<S>/results.json`` (the same seeds in both); OUT gets
``seed<S>/results.json``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def merge(main: Path, variant: Path, out: Path) -> list[Path]:
    written = []
    seeds = sorted(p.name for p in variant.glob("seed*") if (p / "results.json").exists())
    if not seeds:
        raise SystemExit(f"{variant}: no seed*/results.json")
    for seed in seeds:
        source = main / seed / "results.json"
        if not source.exists():
            raise SystemExit(f"{source}: missing (the main run of {seed})")
        mine = json.loads((variant / seed / "results.json").read_text())
        methods = {row["method"] for row in mine}
        base = json.loads(source.read_text())
        ft = next((r for r in base if r["method"] == "ft"), None)
        for row in mine:  # a run without FT beside it has no accuracy relative to FT
            if row.get("relative_accuracy") is None and ft is not None:
                row.update(reference=ft["metric"], reference_from="ft (main run)",
                           relative_accuracy=row["metric"] / ft["metric"])
        rows = [r for r in base if r["method"] not in methods] + mine
        (out / seed).mkdir(parents=True, exist_ok=True)
        (out / seed / "results.json").write_text(json.dumps(rows, indent=1))
        written.append(out / seed)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    for path in merge(*(Path(a) for a in sys.argv[1:])):
        print(path)
