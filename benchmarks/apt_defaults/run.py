"""APT's defaults against the paper's choices: one ``lmprune train`` run per variant and seed.

Each variant is the base schedule plus a few ``apt.*`` overrides (``VARIANTS``); the table
gives the dev metric (mean and spread over seeds), the kept body, the training clock and the
mean seconds per step of the last evaluation interval. The decisions in docs/apt.md
("Defaults: the paper's, or measured reasons") cite this script's results.

Base schedules: ``cpu`` is the demo's (``ablate-apt-cpu``: minilm-l6, 1,024 foods reviews
cut to 32 tokens, 128 steps, about a minute a run on 2 cores); ``gpu`` is the shipped
``train-apt`` schedule on ``--model`` (e.g. mpnet-base), for confirming a CPU decision.

Resumable: a run whose directory holds ``metrics.json`` is not run again.

    python benchmarks/apt_defaults/run.py --out runs/apt_defaults --seeds 0 1 2
    python benchmarks/apt_defaults/run.py --out DIR --base gpu --model mpnet-base \\
        --variants default raw-outlier hidden step-selection
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

#: variant -> overrides on the base (``default`` is lmprune's defaults as shipped).
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "raw-outlier": ["apt.outlier_scale=raw"],  # the paper's sum; the default since 2026-11-28
    "matched-outlier": ["apt.outlier_scale=matched"],
    "hidden": ["apt.structures=[heads,neurons,hidden]"],  # APT prunes hidden channels
    "no-hidden": ["apt.structures=[heads,neurons]"],
    "step-selection": ["apt.selection=step", "apt.min_units=0"],  # APT's code
    "event-selection": ["apt.selection=event", "apt.min_units=1"],
    "static-teacher-layers": ["apt.teacher_layers=static"],
    "teacher-follows-student": ["apt.teacher_structure=student"],
    "dense-growth": ["apt.growth_counts=dense"],  # ranks grow as if nothing were pruned
    "masked": ["apt.compact=false"],  # same losses, full-size cost
    "distill-window": ["apt.distill_epochs=null"],  # until the stop step; default 2026-11-29
    "distill-to-end": ["apt.distill_epochs=1000"],  # to the last step (the default before)
}
BASES = {  # config name, then overrides
    "cpu": ["ablate-apt-cpu", "train.measure=false", "train.save_model=false"],
    "gpu": ["train-apt", "train.lr=1e-3", "train.measure=false", "train.save_model=false"],
}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--base", choices=sorted(BASES), default="cpu")
    p.add_argument("--model", default=None, help="model alias (default: the base's)")
    p.add_argument("--variants", nargs="+", default=["default", "raw-outlier", "hidden",
                                                     "step-selection"], choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--set", nargs="*", default=[], metavar="key=value",
                   help="overrides for every run (the base of every variant; a variant's "
                        "own switches take precedence)")
    return p.parse_args(argv)


def run_one(args, variant: str, seed: int) -> dict:
    from lmprune.cli.main import main

    out = args.out / variant / f"seed{seed}"
    metrics = out / "metrics.json"
    if not metrics.exists():
        config, *base = BASES[args.base]
        model = ["--model", args.model] if args.model else []
        argv = ["train", "--config", config, *model, "--method", "apt", "--out", str(out),
                *base, *args.set, *VARIANTS[variant], f"seed={seed}", "train.progress=false",
                "output.overwrite=true"]  # a variant's own switches win over --set
        if main(argv) != 0:
            raise SystemExit(f"run {variant} seed {seed} failed")
    m = json.loads(metrics.read_text())
    series = (m.get("training_cost") or {}).get("series") or [{}]
    return {"variant": variant, "seed": seed, "metric": m["metric"],
            "kept": m["kept_params_ratio"], "train_seconds": m["train_seconds"],
            "last_step_seconds": series[-1].get("step_seconds"),
            "events": [(e["step"], e["kept"]) for e in m["info"]["apt"]["pruning_log"]]}


def table(rows: list[dict], metric_name: str = "dev accuracy") -> str:
    lines = [f"| variant | {metric_name} (mean) | per seed | kept body | training s | "
             "s/step (last interval) |", "| --- | ---: | --- | ---: | ---: | ---: |"]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        values = [r["metric"] for r in mine]
        lines.append(
            f"| {variant} | {statistics.mean(values):.4f} | "
            f"{', '.join(f'{v:.3f}' for v in values)} | "
            f"{statistics.mean(r['kept'] for r in mine):.3f} | "
            f"{statistics.mean(r['train_seconds'] for r in mine):.1f} | "
            f"{statistics.mean(r['last_step_seconds'] or 0 for r in mine):.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [run_one(args, v, s) for v in args.variants for s in args.seeds]
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    text = table(rows)
    (args.out / "results.md").write_text(
        f"# APT defaults ({args.base} base{', ' + args.model if args.model else ''})\n\n"
        f"Command: `python benchmarks/apt_defaults/run.py {' '.join(argv or sys.argv[1:])}`"
        f"\n\n{text}\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
