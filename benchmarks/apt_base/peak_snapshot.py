"""What holds a training run's GPU memory at its peak: FT and APT, by the allocating code.

``torch.cuda.max_memory_allocated`` says how high training went (the ``peak train MB`` of the
apt_base tables); this says what was alive at that moment. It runs ``step_time.py``'s loop
(random weights and tokens, the apt_base schedule scaled to ``--steps``) on the GPU with
PyTorch's allocator history on (``torch.cuda.memory._record_memory_history``), replays the
recorded allocations and frees to find the moment the allocated bytes were highest, and groups
the blocks alive then by the line that allocated them: the first frame outside PyTorch (a
line of transformers' modeling code, of lmprune, or of this loop) and the first frame in
lmprune (which part of the method asked for it).

    python benchmarks/apt_base/peak_snapshot.py --out DIR [--arch mpnet] [--batch 128]
        [--steps 40] [--mixed-precision bf16] [--methods ft apt] [--set KEY=VALUE ...]

``--set``: ``apt.*`` settings (YAML values) of the APT run. Writes DIR/peak_snapshot.json
(per method: the replayed peak, the loop's highest ``max_memory_allocated`` of an
interval, the loop line of the newest block at the peak and the groups in MB) and prints the
largest groups. Needs a GPU.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import step_time  # noqa: E402  (benchmarks/apt_base/step_time.py: the same model and data)

SKIPPED = ("torch/", "accelerate/")  # packages whose frames say nothing about who asked
STDLIB = ("<frozen", "/contextlib.py", "/functools.py")


def _short(filename: str) -> str:
    """The path inside its installed package (after the last site-/dist-packages/) or
    inside ``src/``: ``transformers/models/...``, ``lmprune/training/...``."""
    for marker in ("site-packages/", "dist-packages/", "/src/"):
        if marker in filename:
            return filename.rsplit(marker, 1)[-1]
    return filename


def _where(frames: list[dict], inside: str | None = None) -> str:
    """``file:line (function)`` of the first frame outside PyTorch (or in ``inside``)."""
    for f in frames:
        name = f.get("filename", "")
        short = _short(name)
        outside = not short.startswith(SKIPPED) and not any(d in name for d in STDLIB)
        if (inside is None and outside) or (inside is not None and inside in name):
            return f"{short}:{f.get('line')} ({f.get('name')})"
    return "(no such frame)"


def alive_at_peak(trace: list[dict]) -> tuple[int, list[dict]]:
    """Replays allocator events: the highest allocated bytes and the blocks alive then."""
    alive: dict[int, dict] = {}
    total = peak = 0
    at_peak: list[dict] = []
    for event in trace:
        action = event["action"]
        if action == "alloc":
            alive[event["addr"]] = event
            total += event["size"]
            if total > peak:
                peak, at_peak = total, list(alive.values())
        elif action == "free_completed" and event["addr"] in alive:
            total -= alive.pop(event["addr"])["size"]
    return peak, at_peak


def groups(blocks: list[dict], inside: str | None) -> dict[str, float]:
    sums: collections.Counter = collections.Counter()
    for b in blocks:
        sums[_where(b.get("frames", []), inside)] += b["size"]
    return {k: round(v / 1e6, 1) for k, v in sums.most_common()}


def _step_of(blocks: list[dict]) -> str:
    """The loop line the newest block alive at the peak was allocated under."""
    newest = blocks[-1] if blocks else {}
    return _where(newest.get("frames", []), inside="training/loop.py")


def run(name: str, args, overrides: dict) -> dict:
    from accelerate import Accelerator

    from lmprune.training.loop import Clock, LoopSettings, run_loop

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.memory._record_memory_history(max_entries=args.max_entries, stacks="python")
    try:
        feats, collate, net, method, lr = step_time.setup(name, args, "cuda", overrides)
        result = run_loop(net, method, feats, collate,
                          LoopSettings(args.steps, args.batch, lr, eval_every=args.interval,
                                       progress=False, mixed_precision=args.mixed_precision),
                          Accelerator(), Clock())
        torch.cuda.synchronize()
        snapshot = torch.cuda.memory._snapshot()
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    trace = snapshot["device_traces"][torch.cuda.current_device()]
    peak, blocks = alive_at_peak(trace)
    del net, method
    if len(trace) >= args.max_entries:  # the ring buffer dropped the oldest events
        print(f"warning: {name}: {len(trace)} allocator events, the history's limit: the "
              "earliest blocks (e.g. the weights) may be missing; raise --max-entries or "
              "lower --steps", file=sys.stderr)
    return {"method": name, "settings": overrides, "events": len(trace),
            "history_full": len(trace) >= args.max_entries,
            "replayed_peak_mb": round(peak / 1e6, 1),
            "max_memory_allocated_mb": round(max(c["memory_mb"] for c in result.costs), 1),
            "newest_block_at_peak": _step_of(blocks),
            "by_line": groups(blocks, None), "by_lmprune_line": groups(blocks, "lmprune/")}


def main(argv=None) -> int:
    from live_memory import setting  # KEY=VALUE with a YAML value

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--arch", choices=["bert", "mpnet"], default="mpnet")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--interval", type=int, default=10,
                   help="steps per interval of the loop's cost record (peak memory each)")
    p.add_argument("--methods", nargs="+", default=["ft", "apt"], choices=["ft", "apt"])
    p.add_argument("--set", type=setting, action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--mixed-precision", dest="mixed_precision", default="no",
                   choices=["no", "bf16"])
    p.add_argument("--max-entries", dest="max_entries", type=int, default=3_000_000)
    p.add_argument("--top", type=int, default=15, help="groups printed per method")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("peak_snapshot.py needs a GPU", file=sys.stderr)
        return 2
    args.tiny = False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    runs = [run(m, args, dict(args.set) if m == "apt" else {}) for m in args.methods]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peak_snapshot.json").write_text(json.dumps(
        {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
         "arch": args.arch, "batch": args.batch, "seq": args.seq, "steps": args.steps,
         "mixed_precision": args.mixed_precision, "runs": runs}, indent=1))
    for r in runs:
        print(f"{r['method']}: peak {r['replayed_peak_mb']} MB replayed, "
              f"{r['max_memory_allocated_mb']} MB max allocated; newest block at the peak: "
              f"{r['newest_block_at_peak']}")
        for key in ("by_line", "by_lmprune_line"):
            print(f"  {key}:")
            for k, v in list(r[key].items())[:args.top]:
                print(f"    {v:9.1f}  {k}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
