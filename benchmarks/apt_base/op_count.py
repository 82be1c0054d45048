"""Operations per training step of APT and full fine-tuning, counted on the CPU.

Runs ``step_time.py``'s loop (BERT-base shape, random weights and tokens; APT prunes from step
4 to 15 in 8 events, self-distillation on) under a ``TorchDispatchMode`` that counts every
ATen operation, and records the count of each step (between two ``after_step`` calls) and the
most frequent operations of the last, settled step. What it shows: how many (small) kernels a
step issues, which is what a launch-bound GPU step pays for. Views count too (they launch no
kernel), and the CPU's Adam runs per parameter where a GPU uses fused ``foreach`` kernels.

    python benchmarks/apt_base/op_count.py --out DIR     # ~1 min on 2 cores

Writes DIR/op_count.json.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_time  # noqa: E402


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.total, self.ops = 0, collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.total += 1
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def counted(method_name: str, args) -> dict:
    """Run one method; per-step operation counts and the last step's most frequent ops."""
    marks = []

    def watch(method):
        after = method.after_step

        def after_step(model, step):
            marks.append((step, counter.total, counter.ops.copy()))
            return after(model, step)

        method.after_step = after_step

    with OpCounter() as counter:
        step_time.run(method_name, args, "cpu", watch=watch)
    per_step = [{"step": marks[i][0], "ops": marks[i][1] - marks[i - 1][1]}
                for i in range(1, len(marks))]
    last = marks[-1][2] - marks[-2][2]
    return {"method": method_name, "per_step": per_step,
            "last_step_top": last.most_common(30)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=16)
    args = p.parse_args(argv)
    args.tiny, args.interval = False, 4
    runs = [counted(m, args) for m in ("ft", "apt")]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "op_count.json").write_text(json.dumps(
        {"shape": step_time.BASE, "steps": args.steps, "batch": args.batch, "seq": args.seq,
         "runs": runs}, indent=1))
    for r in runs:
        print(f"{r['method']}: ops per step " + ", ".join(str(s["ops"]) for s in r["per_step"]))
        print(f"  last step: {r['last_step_top'][:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
