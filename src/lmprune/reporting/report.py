"""Write a run's metrics.json and a human-readable report.md."""
from __future__ import annotations

import json
from pathlib import Path


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def comparison_table(before: dict, after: dict) -> list[str]:
    """Markdown rows comparing flattened before/after metrics (keys present in either)."""
    rows = ["| metric | before | after | after / before |", "| --- | ---: | ---: | ---: |"]
    for key in list(dict.fromkeys([*before, *after])):
        b, a = before.get(key), after.get(key)
        ratio = f"{a / b:.3f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "-"
        rows.append(f"| {key} | {_fmt(b)} | {_fmt(a)} | {ratio} |")
    return rows


def flatten(evaluation: dict) -> dict:
    """One level of ``name: number`` for tables: params, perplexity, accuracy, throughput."""
    flat = {}
    params = evaluation.get("params", {})
    for key in ("total", "body"):
        if key in params:
            flat[f"params.{key}"] = params[key]
    for name, result in evaluation.get("perplexity", {}).items():
        flat[f"ppl.{name}"] = result["perplexity"]
    for task, result in evaluation.get("zero_shot", {}).items():
        flat[f"{task}.acc"] = result.get("acc")
        flat[f"{task}.acc_norm"] = result.get("acc_norm")
    for result in evaluation.get("speed", []):
        flat[f"tokens/s@bs{result['batch_size']}"] = result["tokens_per_s"]
        flat[f"model memory MB@bs{result['batch_size']}"] = result["peak_memory_mb"]
    return flat


def _outcome_lines(metrics: dict) -> list[str]:
    """The width alignment, the device, and what the saved format lacks."""
    lines = []
    alignment = metrics.get("alignment") or {}
    if alignment:
        lines.append(f"- widths rounded with prune.round_to={alignment.get('round_to', '-')}")
    for width in alignment.get("unaligned") or []:
        lines.append(f"- warning: unaligned width (not a multiple of 8, slow on GPUs): {width}")
    if metrics.get("device"):
        lines.append(f"- device: {metrics['device']}, {metrics.get('dtype', '-')}")
    lines += [f"- saved-format note: {n}" for n in metrics.get("saved", {}).get("notes") or []]
    return lines


def _removed_lines(metrics: dict) -> list[str]:
    """The achieved share of parameters and the settings used, when the run recorded them."""
    lines = []
    removed = metrics.get("params_removed_fraction", {}).get("body")
    if removed is not None:
        total = metrics["params_removed_fraction"].get("total")
        lines.append(f"- removed: {removed:.2%} of the non-embedding parameters"
                     + (f" ({total:.2%} of all)" if total is not None else ""))
    settings = metrics.get("settings", {})
    if settings.get("summary"):
        lines.append(f"- settings: {settings['summary']}")
    for section, values in settings.items():
        if section not in ("summary", "prune") and isinstance(values, dict):
            lines.append(f"- {section}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    return lines


def write_report(out: Path, metrics: dict, plots: list[Path]) -> Path:
    """metrics.json plus report.md (before/after table, speedups, protocol, plots)."""
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    before, after = flatten(metrics.get("before", {})), flatten(metrics.get("after", {}))
    lines = [f"# lmprune run: {metrics['method']} on {metrics['model']}", "",
             f"- sparsity requested: {metrics['sparsity']} of {', '.join(metrics['structures'])}",
             *_removed_lines(metrics),
             f"- calibration: {metrics.get('calibration', '-')}",
             f"- saved model: `{metrics.get('saved', {}).get('path', '-')}` "
             f"({metrics.get('saved', {}).get('format', '-')} format)",
             *_outcome_lines(metrics),
             f"- wall time: pruning {metrics['seconds']['prune']:.1f} s, "
             f"total {metrics['seconds']['total']:.1f} s", "",
             "## Before and after", "", *comparison_table(before, after), ""]
    if metrics.get("speedup"):
        lines += ["## Measured speedup (throughput ratio, same process)", "",
                  "| batch size | speedup |", "| ---: | ---: |"]
        lines += [f"| {b} | {s:.3f}x |" for b, s in metrics["speedup"].items()]
        lines.append("")
    protocols = metrics.get("protocols", {})
    if protocols:
        lines += ["## Protocols", ""] + [f"- **{k}**: {v}" for k, v in protocols.items()] + [""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
