"""Where a training step's time goes: device kernels against host work, per phase of APT.

Runs ``step_time.py``'s loop (BERT-base shape, random weights and tokens, batch 32 x 128, the
apt_base schedule: APT prunes from step 16 to 60 in 8 events) for FT and APT, and profiles
three windows of steps of each run — before pruning, inside the pruning window, after the last
compaction — with ``torch.profiler`` (every operator and kernel) and ``cProfile`` (the Python
functions). Per window it records the wall time per step, the kernel time per step (the sum of
the device time of every kernel: a step whose wall time is far above it waits on the host),
the kernel launches per step, the operators with the most host time and the Python functions
with the most cumulative time. The random labels make the losses meaningless.

    python benchmarks/apt_base/step_profile.py --out DIR [--device cuda] [--tiny]
        [--variant NAME:KEY=VALUE,...]

Writes DIR/step_profile.json and DIR/step_profile.txt (the tables). ``--tiny``: a 2-layer
shape on the CPU (the code path only). The profilers slow the profiled steps down; compare
phases and methods within one file, and take step times from ``step_time.py``.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_time  # noqa: E402

#: (name, first step, steps) of each window of the default 80-step schedule
WINDOWS = (("dense", 8, 4), ("pruning", 40, 4), ("settled", 72, 4))


def windows(steps: int) -> list[tuple[str, int, int]]:
    """The windows scaled to a run of ``steps`` steps (``--tiny`` runs 20)."""
    scale = steps / 80
    return [(name, int(first * scale), max(1, int(n * scale))) for name, first, n in WINDOWS]


def _on_device(event) -> bool:
    """A kernel (or device copy/memset) entry rather than the operator that launched it."""
    kind = getattr(event, "device_type", None)
    return kind is not None and "CPU" not in str(kind)


def window(text: str) -> tuple[str, int, int]:
    """``NAME:FIRST:STEPS`` -> (name, first step, steps)."""
    parts = text.split(":")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit() or not int(parts[2]):
        raise argparse.ArgumentTypeError(f"--window {text!r}: use NAME:FIRST:STEPS, e.g. "
                                         "events:16:16")
    return parts[0], int(parts[1]), int(parts[2])


def _device_us(event) -> float:
    for attr in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(event, attr):
            return float(getattr(event, attr))
    return 0.0


class Window:
    """The profilers of one window of steps and what they found."""

    def __init__(self, name: str, first: int, steps: int, device: str):
        self.name, self.first, self.steps, self.device = name, first, steps, device
        self.torch_prof = self.py_prof = None
        self.start = 0.0
        self.found: dict = {}

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def begin(self) -> None:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU]
        if self.device.startswith("cuda"):
            acts.append(ProfilerActivity.CUDA)
        self._sync()
        self.torch_prof = profile(activities=acts)
        self.torch_prof.start()
        self.py_prof = cProfile.Profile()
        self.py_prof.enable()
        self.start = time.perf_counter()

    def end(self) -> None:
        self._sync()
        wall = time.perf_counter() - self.start
        self.py_prof.disable()
        self.torch_prof.stop()
        avgs = self.torch_prof.key_averages()
        n = self.steps
        kernel_us = sum(_device_us(e) for e in avgs if _on_device(e))
        launches = sum(e.count for e in avgs if e.key in ("cudaLaunchKernel", "cuLaunchKernel",
                                                          "cudaLaunchKernelExC"))
        ops = sorted(avgs, key=lambda e: e.self_cpu_time_total, reverse=True)[:20]
        text = io.StringIO()
        stats = pstats.Stats(self.py_prof, stream=text)
        stats.sort_stats("cumulative").print_stats(r"lmprune|transformers|accelerate", 40)
        self.found = {
            "window": self.name, "first_step": self.first, "steps": n,
            "wall_ms_per_step": round(1000 * wall / n, 2),
            "kernel_ms_per_step": round(kernel_us / 1000 / n, 2),
            "launches_per_step": round(launches / n, 1),
            "ops_by_host_time": [{"op": e.key, "calls_per_step": round(e.count / n, 1),
                                  "host_ms_per_step": round(e.self_cpu_time_total / 1000 / n, 3),
                                  "device_ms_per_step": round(_device_us(e) / 1000 / n, 3)}
                                 for e in ops],
            "python_cumulative": text.getvalue(),
        }


def profiled(method_name: str, args, overrides: dict | None = None) -> dict:
    """One run of ``step_time.run`` with its windows profiled."""
    wins = [Window(name, first, n, args.device)
            for name, first, n in args.window or windows(args.steps)]
    marks = []

    def watch(method):
        after = method.after_step

        def after_step(model, step):
            done = step + 1
            result = after(model, step)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            ended = time.perf_counter()
            for w in wins:
                if done == w.first + w.steps:
                    w.end()
                if done == w.first:
                    w.begin()
            marks.append((ended, time.perf_counter()))  # the profilers' own work left out
            return result

        method.after_step = after_step

    run = step_time.run(method_name, args, args.device, overrides, watch=watch)
    run["windows"] = [w.found for w in wins if w.found]
    # every step's wall time (the device synchronised after each; profiled steps included)
    run["step_ms"] = [round(1000 * (b[0] - a[1]), 1) for a, b in zip(marks, marks[1:])]
    return run


def report(runs: list[dict]) -> str:
    lines = []
    for r in runs:
        lines.append(f"== {r['method']} {r['settings'] or ''}: {r['train_seconds']:.2f} s")
        lines.append(f"-- ms per step: {r['step_ms']}")
        for w in r["windows"]:
            lines.append(f"-- {w['window']} (steps {w['first_step']}..): wall "
                         f"{w['wall_ms_per_step']} ms/step, kernels {w['kernel_ms_per_step']} "
                         f"ms/step, {w['launches_per_step']} launches/step")
            for o in w["ops_by_host_time"][:12]:
                lines.append(f"   {o['op'][:48]:48s} x{o['calls_per_step']:>7} "
                             f"host {o['host_ms_per_step']:7.3f} dev {o['device_ms_per_step']:7.3f}")
            lines.append(w["python_cumulative"])
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--variant", type=step_time.variant, action="append", default=[],
                   metavar="NAME:KEY=VALUE,...")
    p.add_argument("--window", type=window, action="append", default=[],
                   metavar="NAME:FIRST:STEPS", help="profile these steps instead of the "
                   "three default windows (repeatable)")
    args = p.parse_args(argv)
    args.steps, args.batch, args.seq, args.interval = 80, 32, 128, 16
    if args.tiny:
        args.steps, args.batch, args.seq, args.interval = 20, 4, 16, 4
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    runs = [profiled(m, args) for m in ("ft", "apt")]
    runs += [profiled(name, args, settings) for name, settings in args.variant]
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_profile.json").write_text(json.dumps(
        {"device": device, "torch": torch.__version__, "steps": args.steps,
         "batch": args.batch, "seq": args.seq, "runs": runs}, indent=1))
    text = report(runs)
    (args.out / "step_profile.txt").write_text(f"device: {device}\n{text}\n")
    print("\n".join(line for line in text.splitlines() if line.startswith(("==", "--"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
