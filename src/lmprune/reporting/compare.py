"""Compare fine-tuning-with-pruning runs: one row per run directory, one table.

Each run directory holds the ``metrics.json`` written by ``lmprune train --out DIR``.

Relative accuracy (as in the APT paper) is a run's metric divided by a reference metric.
The reference is, in this order: an explicit run or number; else the full fine-tuning run
(method ``"ft"``) of the same model, task and metric among the compared runs (the mean of
their metrics when there are several seeds); else none. The per-method summary is the mean
over tasks of relative accuracy (each task first averaged over its runs, e.g. seeds), per
model and method.

Time to accuracy is recomputed from each run's curve against the same reference
(:func:`lmprune.evaluation.efficiency.time_to_accuracy`, 97% of it); without a reference
the run's own recorded value is shown with the reference it was recorded against. A run that
never reached the target gets its whole training time as a lower bound (``tta_lower_bound``,
shown as "> T s"), never a time. Training time and time to accuracy include the runs a run
builds on (``train.init_from``, CoFi's teacher); memory is shown for the run's own stage and,
when it builds on others, for the whole pipeline.
Speedups are only taken from the dense model measured in the same run (``dense_inference``),
never across runs, which may have run on other machines.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from lmprune.errors import LmpruneError
from lmprune.evaluation.efficiency import (at_final_sparsity, batch_results, relative,
                                           time_to_accuracy)

FT_METHOD = "ft"
FRACTION = 0.97
REQUIRED = ("method", "model", "task", "metric_name", "metric")
_MEMORY_SHORT = {"cuda_max_allocated": "GPU", "cpu_rss_peak": "CPU RSS"}


def load_run(directory) -> dict:
    """The metrics of a run directory (or of its metrics.json), with ``run_dir`` added."""
    path = Path(directory)
    if not path.exists():
        raise LmpruneError(f"run directory {str(path)!r} does not exist")
    if path.is_file() and path.suffix != ".json":
        raise LmpruneError(f"{str(path)!r} is a file, not a run directory (pass the directory "
                           "that holds metrics.json)")
    file = path if path.is_file() else path / "metrics.json"
    if not file.is_file():
        raise LmpruneError(f"{str(path)!r} is not a run directory: it has no metrics.json "
                           "(write one with `lmprune train ... --out DIR`)")
    try:
        run = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LmpruneError(f"{str(file)!r} is not valid JSON ({exc}); the run may not have "
                           "finished writing it") from exc
    if not isinstance(run, dict):
        raise LmpruneError(f"{str(file)!r} holds a {type(run).__name__}, not a run's metrics")
    missing = [key for key in REQUIRED if key not in run]
    if missing:
        raise LmpruneError(f"{str(file)!r} is not the metrics of a training run: it lacks "
                           f"{', '.join(missing)} (written by `lmprune train`; `lmprune prune` "
                           "runs are compared in their own report.md)")
    run["run_dir"] = str(file.parent)
    return run


def _same_task(a: dict, b: dict) -> bool:
    return a.get("task") == b.get("task") and a.get("metric_name") == b.get("metric_name")


def _explicit_reference(reference, runs: list[dict]) -> tuple[float, str]:
    if isinstance(reference, dict):
        for run in runs:
            if not _same_task(run, reference):
                raise LmpruneError(
                    f"the reference run ({reference.get('task')}, {reference.get('metric_name')})"
                    f" is not of the same task and metric as {_name(run)} ({run.get('task')}, "
                    f"{run.get('metric_name')}); compare one task at a time, or leave the "
                    "reference out to use each task's ft run")
        return reference["metric"], f"run {_name(reference)}"
    if isinstance(reference, bool) or not isinstance(reference, (int, float)):
        raise LmpruneError(f"a reference is a loaded run or a number, got {reference!r}")
    return float(reference), "given"


def _ft_reference(run: dict, runs: list[dict]) -> tuple[float | None, str | None]:
    fts = [r for r in runs if r.get("method") == FT_METHOD and r.get("model") == run.get("model")
           and _same_task(r, run) and isinstance(r.get("metric"), (int, float))]
    if not fts:
        return None, None
    source = FT_METHOD if len(fts) == 1 else f"{FT_METHOD} (mean of {len(fts)})"
    return sum(r["metric"] for r in fts) / len(fts), source


def _name(run: dict) -> str:
    if run.get("run_dir"):
        return Path(run["run_dir"]).name
    return f"{run.get('method')}/{run.get('model')}/{run.get('task')}"


def _time_to_target(run: dict, reference: float | None) -> dict:
    curve = run.get("curve") or []
    if reference is not None and curve:
        seconds = time_to_accuracy(at_final_sparsity(curve), reference, FRACTION)
    else:
        stored = run.get("time_to_accuracy") or {}
        seconds, reference = stored.get("seconds"), stored.get("reference")
    never = reference is not None and seconds is None
    return {"tta_seconds": seconds, "tta_reference": reference,
            "tta_lower_bound": run.get("train_seconds") if never else None}


def _throughput(run: dict) -> dict:
    dense = batch_results(run.get("dense_inference"))
    out = {}
    for batch, entry in sorted(batch_results(run.get("inference")).items()):
        out[f"throughput_bs{batch}"] = entry.get("samples_per_s")
        base = dense.get(batch, {}).get("samples_per_s")
        out[f"speedup_bs{batch}"] = relative(entry.get("samples_per_s"), base)
    return out


def _memory(run: dict) -> dict:
    memory = run.get("memory") or {}
    train = memory.get("train") or {}
    pipeline = memory.get("pipeline") or {} if run.get("upstream") else train
    return {"peak_train_mb": train.get("mb"), "peak_train_kind": train.get("kind"),
            "peak_pipeline_mb": pipeline.get("mb"),
            "upstream": ", ".join(u["role"] for u in run.get("upstream") or []) or None}


def _reading_order(runs: list[dict]) -> list[dict]:
    """Runs grouped by (model, task) in order of first appearance, ft runs first in each."""
    first: dict[tuple, int] = {}
    for run in runs:
        first.setdefault((run.get("model"), run.get("task")), len(first))
    return sorted(runs, key=lambda r: (first[(r.get("model"), r.get("task"))],
                                       r.get("method") != FT_METHOD))


def compare_runs(runs: list[dict], reference: dict | float | None = None) -> list[dict]:
    """One row per run, grouped by model and task with the ft run first (else in the given
    order); see the module docstring for the reference."""
    if not runs:
        raise LmpruneError("no runs to compare")
    explicit = _explicit_reference(reference, runs) if reference is not None else None
    rows = []
    for run in _reading_order(runs):
        ref, source = explicit or _ft_reference(run, runs)
        row = {"run": _name(run), **{k: run.get(k) for k in ("method", "model", "task")},
               "seed": run.get("seed"), "sparsity": run.get("sparsity"),
               "metric_name": run.get("metric_name"), "metric": run.get("metric"),
               "reference": ref, "reference_from": source,
               "relative_accuracy": relative(run.get("metric"), ref),
               "kept_params_ratio": run.get("kept_params_ratio"),
               "train_seconds": run.get("train_seconds"),
               **_time_to_target(run, ref), **_throughput(run), **_memory(run),
               "device": run.get("device")}
        rows.append(row)
    return rows


def relative_accuracy_by_method(rows: list[dict]) -> list[dict]:
    """Mean over tasks of relative accuracy, per (model, method), in order of appearance.

    Runs of one task (seeds) are averaged first, so every task weighs the same; tasks with
    no reference are left out, and ``tasks`` says how many were averaged.
    """
    per_task: dict[tuple, dict[str, list[float]]] = {}
    for row in rows:
        tasks = per_task.setdefault((row["model"], row["method"]), {})
        if row.get("relative_accuracy") is not None:
            tasks.setdefault(row["task"], []).append(row["relative_accuracy"])
    summary = []
    for (model, method), tasks in per_task.items():
        means = [sum(v) / len(v) for v in tasks.values()]
        summary.append({"model": model, "method": method, "tasks": len(means),
                        "relative_accuracy": sum(means) / len(means) if means else None})
    return summary


def _batch_sizes(rows: list[dict]) -> list[int]:
    found = {int(k.removeprefix("throughput_bs")) for row in rows for k in row
             if k.startswith("throughput_bs")}
    return sorted(found)


def table_columns(rows: list[dict]) -> list[tuple[str, str]]:
    """``(key, HEADER)`` pairs for :func:`format_row`'s output."""
    columns = [("run", "RUN"), ("method", "METHOD"), ("model", "MODEL"), ("task", "TASK"),
               ("metric", "METRIC"), ("relative_accuracy", "REL ACC"),
               ("kept_params_ratio", "KEPT PARAMS"), ("train_seconds", "TRAIN TIME"),
               ("tta_seconds", f"TIME TO {FRACTION:.0%}")]
    columns += [(f"throughput_bs{b}", f"THROUGHPUT BS{b}") for b in _batch_sizes(rows)]
    columns.append(("peak_train_mb", "PEAK TRAIN MEM"))
    if any(row.get("upstream") for row in rows):
        columns.append(("peak_pipeline_mb", "PIPELINE MEM"))
    return columns


def _num(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def format_row(row: dict) -> dict[str, str]:
    """The row as display text: percentages, seconds, samples/s with speedup, MB with kind."""
    out = {k: row.get(k) for k in ("run", "method", "model", "task")}
    metric = row.get("metric")
    out["metric"] = "-" if metric is None else f"{row.get('metric_name')} {metric:.4f}"
    out["relative_accuracy"] = _num(row.get("relative_accuracy"), ".1%")
    out["kept_params_ratio"] = _num(row.get("kept_params_ratio"), ".1%")
    out["train_seconds"] = _num(row.get("train_seconds"), ".1f", " s")
    out["tta_seconds"] = _num(row.get("tta_seconds"), ".1f", " s")
    if row.get("tta_seconds") is None and row.get("tta_reference") is not None:
        bound = row.get("tta_lower_bound")
        out["tta_seconds"] = "not reached" if bound is None else f"> {bound:.1f} s (not reached)"
    for batch in _batch_sizes([row]):
        text = _num(row.get(f"throughput_bs{batch}"), ".4g", "/s")
        speedup = row.get(f"speedup_bs{batch}")
        out[f"throughput_bs{batch}"] = text + (f" ({speedup:.2f}x)" if speedup else "")
    kind = _MEMORY_SHORT.get(row.get("peak_train_kind"), row.get("peak_train_kind") or "")
    out["peak_train_mb"] = _num(row.get("peak_train_mb"), ".0f", f" MB {kind}".rstrip())
    out["peak_pipeline_mb"] = _num(row.get("peak_pipeline_mb"), ".0f", f" MB {kind}".rstrip())
    return out


def format_summary(summary: list[dict]) -> list[dict[str, str]]:
    return [{**s, "relative_accuracy": _num(s["relative_accuracy"], ".1%")} for s in summary]


SUMMARY_COLUMNS = [("model", "MODEL"), ("method", "METHOD"), ("tasks", "TASKS"),
                   ("relative_accuracy", "REL ACC (MEAN OVER TASKS)")]


def _markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> list[str]:
    lines = ["| " + " | ".join(h for _, h in columns) + " |",
             "| " + " | ".join("---" for _ in columns) + " |"]
    for row in rows:
        cells = ["-" if row.get(k) in (None, "") else str(row[k]).replace("|", "\\|")
                 for k, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _notes(rows: list[dict]) -> list[str]:
    from lmprune.evaluation.memory import LABELS

    sources = sorted({f"{r['task']}: {r['reference']:.4g} ({r['reference_from']})"
                      for r in rows if r.get("reference") is not None})
    kinds = sorted({r["peak_train_kind"] for r in rows if r.get("peak_train_kind")})
    notes = [f"- relative accuracy = metric / reference metric; references: "
             f"{'; '.join(sources) or 'none (no ft run among the compared runs)'}",
             f"- time to {FRACTION:.0%}: training seconds until the metric first reached "
             f"{FRACTION:.0%} of the reference (recomputed from each run's curve, points at the "
             "final sparsity only); \"> T s\": never reached, T the whole training time (a "
             "lower bound)",
             "- training time includes the runs a run builds on (train.init_from, CoFi's "
             "teacher); PIPELINE MEM: the largest peak over those runs and the run's own stage "
             "(PEAK TRAIN MEM)",
             "- throughput: forward passes, samples/s; (Nx) = speedup over the dense model "
             "measured in the same run"]
    notes += [f"- memory {_MEMORY_SHORT.get(k, k)}: {LABELS.get(k, k)}" for k in kinds]
    return notes


def write_comparison(rows: list[dict], out: Path) -> Path:
    """Write ``out`` (markdown: table, per-method summary, notes) and the raw rows as CSV."""
    out = Path(out)
    if out.suffix.lower() == ".csv":
        raise LmpruneError(f"write the comparison to a markdown file (e.g. "
                           f"{out.with_suffix('.md')}); the CSV is written beside it")
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = relative_accuracy_by_method(rows)
    lines = [f"# Comparison of {len(rows)} run(s)", "",
             *_markdown_table([format_row(r) for r in rows], table_columns(rows)), "",
             "## Relative accuracy per method (mean over tasks)", "",
             *_markdown_table(format_summary(summary), SUMMARY_COLUMNS), "",
             "## Notes", "", *_notes(rows), ""]
    out.write_text("\n".join(lines), encoding="utf-8")
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with out.with_suffix(".csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return out
