"""Tables, targets and plots of benchmarks/llm_offline from its results.json.

``write_outputs(results, out)`` writes OUT/results.md (per-row table, mean +- std over seeds,
the targets as met / missed), OUT/adapruner_histories.json (every search: trials,
objective, test-probe perplexity, chosen trial) and OUT/adapruner_search.png (best-so-far per
trial, one line per search), and returns the summary table as text.

    python benchmarks/llm_offline/summary.py DIR      # rewrite the outputs of DIR/results.json
    python benchmarks/llm_offline/summary.py DIR --from-log LOG   # rows of a run whose
        # results.json was lost, from the `[bench] KEY: removed ..., ppl ..., recovered ...`
        # lines of its log (no pruning time, no dense row, no search histories)
"""
from __future__ import annotations

import json
import math
import re
import statistics
import sys
from pathlib import Path


def rows(results: dict) -> list[dict]:
    return [r for k, r in results.items() if not k.startswith("_")]


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(pair: tuple[float, float], digits: int = 2) -> str:
    mean, std = pair
    return "-" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def aggregate(results: dict) -> dict[tuple[float, str], dict]:
    """(target, variant) -> means and stds over seeds of the measured quantities."""
    groups: dict[tuple[float, str], list[dict]] = {}
    for r in rows(results):
        groups.setdefault((r["target"], r["variant"]), []).append(r)
    out = {}
    for key, members in sorted(groups.items()):
        spear = [m.get("search", {}).get("spearman_objective_test") for m in members]
        out[key] = {"seeds": sorted(m["seed"] for m in members),
                    "removed": mean_std([100 * m["removed_body"] for m in members]),
                    "ppl": mean_std([m["ppl"] for m in members]),
                    "ppl_recovered": mean_std([m.get("ppl_recovered") for m in members]),
                    "seconds": mean_std([m["prune_seconds"] for m in members]),
                    "spearman": mean_std([s for s in spear if s is not None])}
    return out


def summary_table(agg: dict) -> list[str]:
    lines = ["| target | variant | seeds | removed % | ppl | ppl after LoRA | prune s | "
             "objective~test (Spearman) |", "|" + "---|" * 8]
    for (target, variant), a in agg.items():
        lines.append(f"| {target:.0%} | {variant} | {len(a['seeds'])} | {fmt(a['removed'])} | "
                     f"{fmt(a['ppl'])} | {fmt(a['ppl_recovered'])} | {fmt(a['seconds'], 1)} | "
                     f"{fmt(a['spearman'])} |")
    return lines


def targets(agg: dict) -> list[str]:
    """The issue's comparisons, each stated as met or missed (means over seeds)."""
    lines = []
    for target in sorted({t for t, _ in agg}):
        here = {v: a for (t, v), a in agg.items() if t == target}
        taylor = {v: a for v, a in here.items() if v.startswith("taylor-")}
        for column, label in (("ppl", "before recovery"), ("ppl_recovered", "after recovery")):
            ada = here.get("adapruner-tpe", {}).get(column, (math.nan, 0))[0]
            best = min(taylor, key=lambda v: taylor[v][column][0], default=None)
            if best is None or math.isnan(ada):
                continue
            met = ada < taylor[best][column][0]
            lines.append(f"- {target:.0%}, {label}: AdaPruner (TPE) {ada:.2f} vs best Taylor "
                         f"({best}) {taylor[best][column][0]:.2f}: "
                         f"{'met' if met else 'MISSED'}")
        for a, b, claim in (("adapruner-tpe", "adapruner-random", "TPE < random search"),
                            ("ri-progressive-normalized", "ri-progressive-raw",
                             "normalized RI < raw (progressive)"),
                            ("ri-oneshot-normalized", "ri-oneshot-raw",
                             "normalized RI < raw (one-shot)"),
                            ("ri-progressive-normalized", "ri-oneshot-normalized",
                             "progressive < one-shot (normalized)")):
            if a in here and b in here:
                x, y = here[a]["ppl"][0], here[b]["ppl"][0]
                lines.append(f"- {target:.0%}: {claim}: {x:.2f} vs {y:.2f}: "
                             f"{'holds' if x < y else 'does not hold'}")
    return lines


def per_row_table(results: dict) -> list[str]:
    lines = ["| target | variant | seed | removed | ppl | ppl after LoRA | prune s |",
             "|" + "---|" * 7]
    for r in sorted(rows(results), key=lambda r: (r["target"], r["variant"], r["seed"])):
        rec = r.get("ppl_recovered")
        lines.append(f"| {r['target']:.0%} | {r['variant']} | {r['seed']} | "
                     f"{r['removed_body']:.2%} | {r['ppl']:.2f} | "
                     f"{'-' if rec is None else f'{rec:.2f}'} | {r['prune_seconds']:.1f} |")
    return lines


def confirmation_table(results: dict) -> list[str]:
    """Per AdaPruner search with a confirmation round: the trial the objective alone would
    have kept and the chosen one, with their test-probe perplexities (never searched on)."""
    lines = ["| search | best objective: trial, objective, probe | chosen: trial, "
             "confirmation, probe |", "|---|---|---|"]
    for key, search in sorted(histories(results).items()):
        if search.get("search_best_trial") is None or search.get("confirm_value") is None:
            continue
        trials = {t["number"]: t for t in search["history"]}
        top, chosen = trials[search["search_best_trial"]], trials[search["best_trial"]]
        lines.append(f"| {key} | {top['number']}, {top['value']:.2f}, {_num(top['probe'])} | "
                     f"{chosen['number']}, {chosen['confirm']:.2f}, {_num(chosen['probe'])} |")
    return lines if len(lines) > 2 else []


def _num(value) -> str:
    return "-" if value is None else f"{float(value):.2f}"


def histories(results: dict) -> dict:
    return {k: r["search"] for k, r in results.items()
            if not k.startswith("_") and "history" in r.get("search", {})}


def plot_histories(searches: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    targets = sorted({float(k.split("/")[0]) for k in searches})
    if not targets:
        return
    figure = Figure(figsize=(6 * len(targets), 3.8))
    FigureCanvasAgg(figure)
    for i, target in enumerate(targets):
        ax = figure.add_subplot(1, len(targets), i + 1)
        for key, search in sorted(searches.items()):
            if float(key.split("/")[0]) != target:
                continue
            trials = search["history"]
            style = "-" if "tpe" in key else "--"
            ax.step([t["number"] for t in trials], [t["best_so_far"] for t in trials],
                    where="post", linestyle=style, label=key.split("/", 1)[1])
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("trial")
        ax.set_ylabel("best held-out perplexity so far")
        ax.set_title(f"AdaPruner searches at {target:.0%}")
        ax.legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def write_outputs(results: dict, out: Path) -> str:
    agg = aggregate(results)
    table = summary_table(agg)
    dense = results.get("_dense", {})
    md = ["# benchmarks/llm_offline results", "",
          (f"Dense perplexity {dense['ppl']:.2f} on {dense.get('windows')} windows "
           f"({dense.get('device', '?')}); command: `{dense.get('command', '?')}`" if dense else
           "Rebuilt from a log's finished rows (`--from-log`): no dense row, pruning times or "
           "search histories."), "",
          "## Mean ± std over calibration seeds", "", *table, "", "## Targets", "",
          *targets(agg), ""]
    confirm = confirmation_table(results)
    if confirm:
        md += ["## AdaPruner's confirmation round", "",
               "Probe: test perplexity on the first windows of the test text, scored for every "
               "trial, never searched on.", "", *confirm, ""]
    md += ["## Every row", "", *per_row_table(results), ""]
    (out / "results.md").write_text("\n".join(md))
    searches = histories(results)
    (out / "adapruner_histories.json").write_text(json.dumps(searches, indent=1, default=str))
    plot_histories(searches, out / "adapruner_search.png")
    return "\n".join(table + [""] + targets(agg))


LOG_ROW = re.compile(r"^\[bench\] (?P<target>[0-9.]+)/(?P<variant>[\w-]+)/seed(?P<seed>\d+): "
                     r"removed (?P<removed>[0-9.]+)%, ppl (?P<ppl>[0-9.]+)"
                     r"(?:, recovered (?P<rec>[0-9.]+))? \((?P<secs>\d+) s\)$")


def results_from_log(text: str) -> dict:
    """The finished rows a run printed (progress bars' carriage returns split into lines)."""
    results = {}
    for line in text.replace("\r", "\n").splitlines():
        m = LOG_ROW.match(line.strip())
        if m:
            key = f"{float(m['target']):.2f}/{m['variant']}/seed{m['seed']}"
            results[key] = {"target": float(m["target"]), "variant": m["variant"],
                            "seed": int(m["seed"]), "removed_body": float(m["removed"]) / 100,
                            "ppl": float(m["ppl"]), "prune_seconds": math.nan,
                            "row_seconds": float(m["secs"]),
                            **({"ppl_recovered": float(m["rec"])} if m["rec"] else {})}
    return results


def main(argv=None) -> None:
    import argparse

    p = argparse.ArgumentParser(description="tables, targets and plots of a results folder")
    p.add_argument("folder", type=Path, help="holds results.json (written there with --from-log)")
    p.add_argument("--from-log", type=Path, metavar="LOG",
                   help="rebuild results.json from the finished rows of a run's log")
    args = p.parse_args(argv)
    if args.from_log is not None:
        rebuilt = results_from_log(args.from_log.read_text(errors="replace"))
        if not rebuilt:
            sys.exit(f"no finished [bench] rows in {args.from_log}")
        args.folder.mkdir(parents=True, exist_ok=True)
        (args.folder / "results.json").write_text(json.dumps(rebuilt, indent=1))
    print(write_outputs(json.loads((args.folder / "results.json").read_text()), args.folder))


if __name__ == "__main__":
    main()
