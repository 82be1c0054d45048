"""metrics.json and report.md of an ``lmprune train`` run (with the training-curve plot)."""
from __future__ import annotations

import json
from pathlib import Path


def _f(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _efficiency_lines(m: dict) -> list[str]:
    inf, dense = m.get("inference") or {}, m.get("dense_inference") or {}
    sizes = sorted((k for k in inf if k.isdigit()), key=int)
    if not sizes:
        return []
    lines = ["## Inference (measured, same process)", "",
             f"Random token ids, sequence length {inf.get('seq_len', '-')}, device "
             f"{inf.get('device', m.get('device', '-'))}.", "",
             "| batch | samples/s | latency ms | dense samples/s | ratio vs dense | model MB | "
             "dense model MB |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    labels = set()
    for b in sizes:
        row, d = inf[b], dense.get(b, {})
        ratio = (row["samples_per_s"] / d["samples_per_s"]) if d.get("samples_per_s") else None
        peak, dense_peak = row.get("peak_memory") or {}, d.get("peak_memory") or {}
        labels.add(peak.get("label"))
        lines.append(f"| {b} | {_f(row['samples_per_s'], 1)} | {_f(row['latency_ms'], 1)} | "
                     f"{_f(d.get('samples_per_s'), 1)} | {_f(ratio, 2)} | {_f(peak.get('mb'), 1)} "
                     f"| {_f(dense_peak.get('mb'), 1)} |")
    labels.discard(None)
    return lines + [""] + [f"Model MB: {label}." for label in sorted(labels)] + [""]


def _upstream_note(m: dict, upstream: list[dict]) -> str:
    if not upstream:
        return ""
    parts = ", ".join(f"{u['train_seconds']:.1f} s of {u['role']} {Path(u['run']).name}"
                      for u in upstream)
    return f" (this stage {m.get('own_train_seconds', 0):.1f} s + {parts})"


def _tta_text(m: dict, tta: dict) -> str:
    if tta.get("reference") is None:
        return "-"
    if tta.get("seconds") is None:  # never reached: all we know is a lower bound
        return f"not reached: > {m['train_seconds']:.1f} s (the whole training)"
    return f"{tta['seconds']:.1f} s"


def _pipeline_memory_rows(m: dict, upstream: list[dict]) -> list[str]:
    if not upstream:
        return []
    pipe = (m.get("memory") or {}).get("pipeline")
    text = f"{pipe['mb']:.1f} MB ({pipe['label']})" if pipe else \
        "- (the stages were measured differently: GPU and CPU peaks do not compare)"
    return [f"| peak training memory (whole pipeline, with "
            f"{', '.join(u['role'] for u in upstream)}) | {text} |"]


def _cost_lines(cost: dict) -> list[str]:
    """First and last interval of ``training_cost``: how much cheaper the end trained."""
    series = cost.get("series") or []
    if len(series) < 2:
        return []
    first, last = series[0], series[-1]
    kind = "GPU peak (MB)" if first["memory_kind"].startswith("cuda") else "process RSS (MB)"
    rows = [("seconds per step", "step_seconds", 4), (kind, "memory_mb", 1),
            ("tensors held between steps (MB)", "state_mb", 1), ("parameters", "params", 0),
            ("trainable parameters", "trainable", 0)]
    lines = ["## Training cost along the run", "",
             f"Per evaluation interval (`training_cost` in metrics.json; "
             f"{len(cost.get('events') or [])} pruning events / compactions marked in "
             "`training_cost.png`).", "",
             f"| quantity | first interval (to step {first['step']}) | last interval "
             f"(to step {last['step']}) |", "| --- | ---: | ---: |"]
    for name, key, digits in rows:
        lines.append(f"| {name} | {_f(first[key], digits) if digits else first[key]:} | "
                     f"{_f(last[key], digits) if digits else last[key]} |")
    return lines + [""]


def write_train_report(out: Path, metrics: dict) -> Path:
    """Write ``metrics.json``, the curve plot and ``report.md`` into ``out``."""
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    m = metrics
    plots = []
    if len(m.get("curve", [])) > 1:
        from lmprune.reporting.curves import plot_training_curve

        ref = (m.get("time_to_accuracy") or {}).get("reference")
        plots.append(plot_training_curve(m["curve"], out / "training_curve.png",
                                         m["metric_name"], reference=ref,
                                         title=f"{m['method']} on {m['model']} / {m['task']}"))
    cost = m.get("training_cost") or {}
    if len(cost.get("series", [])) > 1:
        from lmprune.reporting.curves import plot_training_cost

        plots.append(plot_training_cost(cost["series"], out / "training_cost.png",
                                        cost.get("events"),
                                        title=f"{m['method']}: cost per training interval"))
    tta = m.get("time_to_accuracy") or {}
    mem = (m.get("memory") or {}).get("train") or {}
    upstream = m.get("upstream") or []
    lines = [f"# lmprune train: {m['method']} on {m['model']} / {m['task']}", "",
             "| quantity | value |", "| --- | --- |",
             f"| dev {m['metric_name']} | {_f(m['metric'])} |",
             f"| test metrics | {_f(m.get('test_metrics'))} |",
             f"| sparsity requested | {m['sparsity']} |",
             f"| kept body parameters | {m['kept_params_ratio']:.1%} "
             f"({m['params']['kept_body']:,} of {m['params']['dense_body']:,}) |",
             f"| kept parameters with embeddings | {m['kept_params_ratio_with_embeddings']:.1%} |",
             f"| training time (clock, evaluations excluded) | {m['train_seconds']:.1f} s"
             f"{_upstream_note(m, upstream)} |",
             f"| steps | {m['steps']} |",
             f"| time to 97% of reference {_f(tta.get('reference'))} | {_tta_text(m, tta)} |",
             f"| peak training memory{' (this stage)' if upstream else ''} | "
             f"{_f(mem.get('mb'), 1)} MB ({mem.get('label', '-')}) |",
             *_pipeline_memory_rows(m, upstream),
             f"| device | {m['device']} |", ""]
    lines += _efficiency_lines(m)
    lines += _cost_lines(cost)
    lines += ["## Phases", ""]
    for phase in m.get("phases", []):
        summary = {k: v for k, v in phase.items() if k != "pruning_log"}
        lines.append(f"- {json.dumps(summary, default=str)}")
        for event in phase.get("pruning_log", []):
            lines.append(f"  - pruning event {json.dumps(event, default=str)}")
    lines += ["", "## Protocol", "",
              "- dev metric on the evaluation split after every `train.eval_every` steps; the "
              "training clock pauses during evaluations;",
              "- time-to-accuracy: first clock time at which a model at the final sparsity "
              "reaches 97% of the reference metric (dense models on the way do not count);",
              "- throughput: forward passes on random token ids after warm-up; model MB: each "
              "model measured alone during one more forward (label above the table); peak "
              "training memory on CPU is the process's resident set peak (not comparable with "
              "GPU figures).", ""]
    if plots:
        lines += ["## Training curve", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
