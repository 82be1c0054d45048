"""Each run's best dev point beside its final one: APT (at its final sparsity) against FT.

The targets of issue 11 compare final dev accuracies. On a long run a model can peak and then
over-fit (FT on the long schedule peaks by step 81-216 of 540 and ends lower), so this table
also gives each run's best point of its training curve: FT's over the whole run, APT's over
the points at its final keep ratio (after its pruning window, the rule the time-to-accuracy
column uses). Choosing on dev is optimistic for both; it says how much of a ratio comes from
where a run happened to stop.

    python benchmarks/apt_base/best_dev.py DIR [DIR ...]   # seed folders with ft/ and apt/
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def final_sparsity_points(curve: list[dict]) -> list[dict]:
    """The curve's points at its last keep ratio (the initial evaluation left out)."""
    last = curve[-1].get("keep_ratio", 1.0)
    return [p for p in curve if p.get("phase") != "start"
            and abs(p.get("keep_ratio", 1.0) - last) < 1e-3]


def best_and_final(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    points = final_sparsity_points(metrics["curve"])
    if not points:
        raise SystemExit(f"{run_dir}: no curve points at the final keep ratio")
    best = max(points, key=lambda p: p["metric"])
    return {"final": metrics["metric"], "best": best["metric"], "best_step": best["step"]}


def rows(dirs: list[Path], method: str = "apt", reference: str = "ft") -> list[dict]:
    out = []
    for seed_dir in dirs:
        ref, run = best_and_final(seed_dir / reference), best_and_final(seed_dir / method)
        out.append({"seed": seed_dir.name, "reference": ref, "method": run,
                    "final_ratio": run["final"] / ref["final"],
                    "best_ratio": run["best"] / ref["best"]})
    return out


def markdown(table: list[dict], method: str = "apt", reference: str = "ft") -> str:
    lines = [f"| seed | {reference} final | {reference} best (step) | {method} final | "
             f"{method} best at final sparsity (step) | final ratio | best ratio |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in table:
        ref, run = r["reference"], r["method"]
        lines.append(f"| {r['seed']} | {ref['final']:.4f} | {ref['best']:.4f} ({ref['best_step']}) "
                     f"| {run['final']:.4f} | {run['best']:.4f} ({run['best_step']}) | "
                     f"{r['final_ratio']:.1%} | {r['best_ratio']:.1%} |")
    finals = [r["final_ratio"] for r in table]
    bests = [r["best_ratio"] for r in table]
    lines.append(f"| mean | | | | | {statistics.mean(finals):.1%} | {statistics.mean(bests):.1%} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    dirs = [Path(d) for d in (sys.argv[1:] if argv is None else argv)]
    if not dirs:
        raise SystemExit("usage: best_dev.py DIR [DIR ...] (seed folders with ft/ and apt/)")
    print(markdown(rows(dirs)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
