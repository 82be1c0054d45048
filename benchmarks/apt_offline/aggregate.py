"""Mean and spread over seeds of the apt_offline results, and the issue's targets on the means.

    python benchmarks/apt_offline/aggregate.py benchmarks/apt_offline/results/seed*

Reads each directory's ``results.json`` (written by run.py) and prints a markdown table:
per method, mean ± standard deviation (over seeds) of dev accuracy, relative accuracy
(per seed against that seed's FT run), kept body parameters, training time, time to 97% of
FT (how many seeds reached it; a seed that never did contributes its whole training time as
a lower bound, and the mean is then a lower bound too: "≥"), throughput ratios vs dense, peak
training memory of the run's own stage and of its whole pipeline (when it builds on others).
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from run import ORDER


def _stats(values: list) -> tuple[float | None, float | None, int]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None, 0
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def _fmt(values: list, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
    mean, std, n = _stats(values)
    if mean is None:
        return "never"
    text = f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}{unit}"
    return text if n == len(values) else f"{text} ({n}/{len(values)} seeds)"


def _fmt_tta(rows: list[dict]) -> str:
    """Mean ± sd when every seed reached 97%; else a lower bound over all seeds."""
    reached = [r.get("tta_seconds") for r in rows]
    if all(v is not None for v in reached):
        return _fmt(reached, 1)
    bounds = [v if v is not None else r.get("tta_lower_bound") for v, r in zip(reached, rows)]
    n = sum(v is not None for v in reached)
    if any(b is None for b in bounds):
        return f"never ({n}/{len(rows)} seeds)"
    return f"≥ {statistics.mean(bounds):.1f} ({n}/{len(rows)} seeds reached; others > their training time)"


def aggregate(dirs: list[Path]) -> tuple[list[str], dict]:
    by_method: dict[str, list[dict]] = {}
    for d in dirs:
        for row in json.loads((d / "results.json").read_text()):
            by_method.setdefault(row["method"], []).append(row)
    lines = [f"{len(dirs)} seeds ({', '.join(d.name for d in dirs)}); mean ± standard deviation.",
             "", "| method | dev accuracy | relative to FT | kept body | train s | "
             "time to 97% of FT (s) | bs32 vs dense | bs128 vs dense | peak train MB | "
             "pipeline MB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    means = {}
    for method in [m for m in ORDER if m in by_method]:
        rows = by_method[method]
        keys = {k for r in rows for k in r} | {"speedup_bs32", "speedup_bs128", "peak_pipeline_mb"}
        col = {k: [r.get(k) for r in rows] for k in keys}
        means[method] = {k: _stats(col[k])[0] for k in (
            "metric", "relative_accuracy", "tta_seconds", "peak_train_mb", "train_seconds")}
        means[method]["tta_reached"] = sum(v is not None for v in col["tta_seconds"])
        means[method]["tta_seeds"] = len(rows)
        pipeline = [p if p is not None else t
                    for p, t in zip(col["peak_pipeline_mb"], col["peak_train_mb"])]
        lines.append(f"| {method} | {_fmt(col['metric'])} | "
                     f"{_fmt(col['relative_accuracy'], 1, 100, '%')} | "
                     f"{_fmt(col['kept_params_ratio'], 1, 100, '%')} | "
                     f"{_fmt(col['train_seconds'], 1)} | {_fmt_tta(rows)} | "
                     f"{_fmt(col['speedup_bs32'], 2, 1, 'x')} | "
                     f"{_fmt(col['speedup_bs128'], 2, 1, 'x')} | "
                     f"{_fmt(col['peak_train_mb'], 0)} | {_fmt(pipeline, 0)} |")
    return lines, means


def targets(means: dict) -> list[str]:
    ft, apt, lp = means.get("ft"), means.get("apt"), means.get("lora-prune")
    out = []
    if ft and apt:
        rel = apt["relative_accuracy"]
        out.append(f"APT accuracy >= 98% of FT (mean of per-seed ratios): {rel:.1%} -> "
                   f"{'met' if rel >= 0.98 else 'missed'}")
        t_apt, t_ft = apt["train_seconds"], ft["train_seconds"]
        out.append(f"APT training time below FT's (same epochs): {t_apt:.1f} s vs {t_ft:.1f} s "
                   f"-> {'met' if t_apt < t_ft else 'missed'}")
        mem = apt["peak_train_mb"] / ft["peak_train_mb"]
        out.append(f"APT peak training memory <= 65% of FT: {mem:.1%} -> "
                   f"{'met' if mem <= 0.65 else 'missed'}")
    if apt and lp:
        out.append(f"APT more accurate than lora-prune: {apt['metric']:.4f} vs {lp['metric']:.4f}"
                   f" -> {'met' if apt['metric'] > lp['metric'] else 'missed'}")
        out.append(_speedup_on_means(apt, lp))
    return out


def _speedup_on_means(apt: dict, lp: dict, factor: float = 10.0) -> str:
    """The 10x target, met only when both reached 97% in every seed (else a bound)."""
    claim = f"APT reaches 97% of FT {factor:g}x sooner than lora-prune"
    every = (apt["tta_reached"] == apt["tta_seeds"], lp["tta_reached"] == lp["tta_seeds"])
    if not every[0]:
        return f"{claim}: APT reached 97% in {apt['tta_reached']}/{apt['tta_seeds']} seeds -> MISSED"
    if not every[1]:
        return (f"{claim}: APT after {apt['tta_seconds']:.1f} s (mean); lora-prune reached 97% "
                f"in {lp['tta_reached']}/{lp['tta_seeds']} seeds, so its time is only bounded "
                f"below -> NOT MEASURED")
    ratio = lp["tta_seconds"] / apt["tta_seconds"]
    return (f"{claim}: {apt['tta_seconds']:.1f} s vs {lp['tta_seconds']:.1f} s ({ratio:.1f}x) "
            f"-> {'met' if ratio >= factor else 'missed'}")


def main(argv: list[str], header: str = "Targets (issue 4), on the means:",
         doc: str | None = None) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(doc or __doc__)
        return 0
    dirs = [Path(a) for a in argv] or sorted(Path(__file__).parent.glob("results/seed*"))
    missing = [str(d) for d in dirs if not (d / "results.json").is_file()]
    if missing or not dirs:
        print(f"no results.json in: {', '.join(missing) or 'results/seed*'} (give the seed "
              "directories run.py wrote, e.g. results/seed0 results/seed1)", file=sys.stderr)
        return 2
    lines, means = aggregate(dirs)
    print("\n".join(lines + ["", header, ""]
                    + [f"- {t}" for t in targets(means)]))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main(sys.argv[1:]))
