"""What ``lmprune train --gradient-checkpointing`` costs and saves: each method trained with and
without it, side by side (benchmark, not a test).

    python benchmarks/recompute/run.py --out DIR [--model minilm-l6] [--task foods]
        [--methods ft lora apt] [--batch-size 64] [--steps 12] [--device auto]
        [--mixed-precision no|bf16] [--sparsity 0.6]

Every run is its own ``lmprune train`` process (on a CPU the peak is the process's resident
set, which one earlier run in the same process would have raised): the same seed, data,
steps and settings, once plain and once recomputing. Each run's training time, peak training
memory (``torch.cuda.max_memory_allocated`` on a GPU, the process RSS peak on a CPU, which
includes the interpreter and libraries), last training loss and dev metric go to
DIR/results.json and DIR/results.md; the runs themselves stay in DIR/<method>-<plain|recompute>/
(a run whose metrics.json is there is not run again). The losses must agree: recomputation
changes where activations live, not what a step computes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("ft", "lora", "apt", "lora-prune-distill", "cofi")
MODES = {"plain": [], "recompute": ["--gradient-checkpointing"]}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--task", default="foods")
    p.add_argument("--methods", nargs="+", default=["ft", "lora", "apt"], choices=METHODS)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--device", default="auto")
    p.add_argument("--mixed-precision", default="no", choices=["no", "bf16"])
    p.add_argument("--sparsity", type=float, default=0.6)
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.steps < 2:
        p.error("--batch-size must be >= 1 and --steps >= 2")
    return args


def command(args: argparse.Namespace, method: str, mode: str, out: Path) -> list[str]:
    """The ``lmprune train`` command line of one run."""
    return [sys.executable, "-m", "lmprune", "train", "--method", method, "--model", args.model,
            "--task", args.task, "--sparsity", str(args.sparsity), "--out", str(out),
            "--device", args.device, "--mixed-precision", args.mixed_precision, *MODES[mode],
            f"train.max_steps={args.steps}", f"train.batch_size={args.batch_size}",
            f"train.eval_every={args.steps}", "train.max_eval_samples=128",
            f"train.max_train_samples={args.batch_size * args.steps}",
            f"apt.prune_start={max(1, args.steps // 4)}", "train.measure=false",
            "train.save_model=false", "train.progress=false", "train.resume=false",
            "output.overwrite=true"]


def run_one(args: argparse.Namespace, method: str, mode: str) -> dict:
    out = args.out / f"{method}-{mode}"
    metrics_file = out / "metrics.json"
    if not metrics_file.is_file():
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
        started = time.perf_counter()
        done = subprocess.run(command(args, method, mode, out), env=env, text=True,
                              capture_output=True)
        if done.returncode != 0:
            raise SystemExit(f"{method} ({mode}) failed:\n{done.stderr[-3000:]}")
        print(f"[recompute] {method} {mode}: {time.perf_counter() - started:.0f} s", flush=True)
    m = json.loads(metrics_file.read_text())
    train = (m.get("memory") or {}).get("train") or {}
    losses = [p.get("final_loss") for p in m.get("phases", [])]
    return {"method": method, "mode": mode, "train_seconds": m["train_seconds"],
            "peak_train_mb": train.get("mb"), "memory_kind": train.get("kind"),
            "last_loss": losses[-1] if losses else None, "metric": m["metric"],
            "metric_name": m["metric_name"], "device": m.get("device")}


def markdown(args: argparse.Namespace, rows: list[dict]) -> str:
    by = {(r["method"], r["mode"]): r for r in rows}
    lines = [f"# Gradient checkpointing: {args.model} / {args.task}, batch {args.batch_size}, "
             f"{args.steps} steps, precision {args.mixed_precision}", "",
             f"Device: {rows[0]['device']}; memory: {rows[0]['memory_kind']}.", "",
             "| method | peak MB plain | peak MB recompute | ratio | train s plain | "
             "train s recompute | ratio | last loss plain / recompute | dev metric plain / "
             "recompute |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for method in args.methods:
        p, r = by[(method, "plain")], by[(method, "recompute")]
        lines.append(
            f"| {method} | {p['peak_train_mb']:.0f} | {r['peak_train_mb']:.0f} | "
            f"{r['peak_train_mb'] / p['peak_train_mb']:.2f} | {p['train_seconds']:.2f} | "
            f"{r['train_seconds']:.2f} | {r['train_seconds'] / p['train_seconds']:.2f} | "
            f"{p['last_loss']:.6f} / {r['last_loss']:.6f} | {p['metric']:.4f} / "
            f"{r['metric']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [run_one(args, method, mode) for method in args.methods for mode in MODES]
    (args.out / "results.json").write_text(json.dumps(
        {"settings": {k: str(v) for k, v in vars(args).items()}, "runs": rows}, indent=2))
    text = markdown(args, rows)
    (args.out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
