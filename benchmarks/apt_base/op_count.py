"""Operations per training step of APT and full fine-tuning, counted on the CPU.

Runs ``step_time.py``'s loop (BERT-base shape, random weights and tokens; APT prunes from step
4 to 15 in 8 events, self-distillation on) under a ``TorchDispatchMode`` that counts every
ATen operation, and records the count of each step (between two ``after_step`` calls) and the
most frequent operations of the last, settled step. What it shows: how many (small) kernels a
step issues, which is what a launch-bound GPU step pays for. Views count too (they launch no
kernel), and the CPU's Adam runs per parameter where a GPU uses fused ``foreach`` kernels.

    python benchmarks/apt_base/op_count.py --out DIR     # ~1 min on 2 cores
    python benchmarks/apt_base/op_count.py --out DIR --by-caller 2 7   # and who issued them
    python benchmarks/apt_base/op_count.py --out DIR --variant f16:frozen_dtype=float16

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
    """Counts ATen operations by name and, with ``by_caller``, by the innermost lmprune
    function on the Python stack that issued them (the model's own code and autograd's
    backward: "(model / autograd)")."""

    def __init__(self, by_caller: bool = False):
        super().__init__()
        self.total, self.ops = 0, collections.Counter()
        self.by_caller, self.callers = by_caller, collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.total += 1
        self.ops[func.overloadpacket.__name__] += 1
        if self.by_caller:
            self.callers[_caller()] += 1
        return func(*args, **(kwargs or {}))


def _caller() -> str:
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if "/lmprune/" in path and "/training/loop.py" not in path:
            return f"{Path(path).parent.name}/{Path(path).name}:{frame.f_code.co_name}"
        frame = frame.f_back
    return "(model / autograd)"


def counted(method_name: str, args, name: str | None = None,
            overrides: dict | None = None) -> dict:
    """Run one method (with ``apt.*`` ``overrides``); per-step operation counts and the last
    step's most frequent ops, under ``name`` (default: the method's)."""
    marks = []

    def watch(method):
        after = method.after_step

        def after_step(model, step):
            marks.append((step, counter.total, counter.ops.copy(), counter.callers.copy()))
            return after(model, step)

        method.after_step = after_step

    with OpCounter(by_caller=bool(args.by_caller)) as counter:
        step_time.run(method_name, args, "cpu", overrides, watch=watch)
    per_step = [{"step": marks[i][0], "ops": marks[i][1] - marks[i - 1][1]}
                for i in range(1, len(marks))]
    last = marks[-1][2] - marks[-2][2]
    out = {"method": name or method_name, "settings": overrides or {}, "per_step": per_step,
           "last_step_top": last.most_common(30)}
    if args.by_caller:  # per step asked for: the ops of the step ending at that after_step
        out["by_caller"] = {str(marks[i][0]): (marks[i][3] - marks[i - 1][3]).most_common(25)
                            for i in range(1, len(marks)) if marks[i][0] in args.by_caller}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=16)
    p.add_argument("--by-caller", type=int, nargs="*", default=[], metavar="STEP",
                   help="also count these steps' operations by the lmprune function that "
                        "issued them (slower)")
    p.add_argument("--variant", type=step_time.variant, action="append", default=[],
                   help="one more APT run with these apt.* settings, as step_time.py's")
    args = p.parse_args(argv)
    args.tiny, args.interval = False, 4
    runs = [counted(m, args) for m in ("ft", "apt")]
    runs += [counted("apt", args, name, settings) for name, settings in args.variant]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "op_count.json").write_text(json.dumps(
        {"shape": step_time.BASE, "steps": args.steps, "batch": args.batch, "seq": args.seq,
         "runs": runs}, indent=1))
    for r in runs:
        print(f"{r['method']}: ops per step " + ", ".join(str(s["ops"]) for s in r["per_step"]))
        print(f"  last step: {r['last_step_top'][:12]}")
        for step, callers in r.get("by_caller", {}).items():
            print(f"  step {step} by caller: {callers[:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
