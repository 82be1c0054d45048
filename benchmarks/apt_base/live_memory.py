"""Live tensor memory of every training step, counted on the CPU: where APT's memory goes.

``torch.cuda.max_memory_allocated`` says how high a GPU step's memory went, not what held it.
This runs the loop of ``step_time.py`` (BERT-base shape, random weights and tokens, the
apt_base schedule scaled to ``--steps``) on the CPU inside a ``TorchDispatchMode`` that adds up
the bytes of every tensor storage an operation creates and subtracts them when the storage is
freed, so it knows, at every operation, the bytes alive. Per step it records: alive before the
forward pass, at its end, the step's peak, and alive after the step; ``--where`` adds the
Python frames of each step's peak. Tensors made before the run (none: the model is built
inside it) would not be counted.

    python benchmarks/apt_base/live_memory.py --out DIR [--batch 4] [--steps 20]
        [--methods ft apt] [--set KEY=VALUE ...] [--where] [--mixed-precision bf16] [--tiny]

``--set``: ``apt.*`` settings (YAML values), e.g. ``--set teacher_dtype=bfloat16``. Writes
DIR/live_memory.json and prints a table (MiB). Activations grow with ``--batch``; weights,
optimizer state and the teacher do not, so run two batch sizes to separate them. 131 s (FT)
and 172 s (APT) at batch 4 on 2 shared cores. ``--tiny``: step_time's 2-layer shape (the code
path only).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parent))

import step_time  # noqa: E402  (benchmarks/apt_base/step_time.py: the same model and data)

MIB = 2 ** 20


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages alive, updated at every operation; ``peak`` since the
    last :meth:`mark`, and where it was reached when ``where`` is set."""

    def __init__(self, where: bool = False) -> None:
        super().__init__()
        self.alive: dict[int, int] = {}
        self.now = self.peak = 0
        self.where, self.at = where, None

    def _add(self, t) -> None:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return
        storage = t.untyped_storage()
        key, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or key in self.alive:
            return
        self.alive[key] = size
        self.now += size
        if self.now > self.peak:
            self.peak = self.now
            if self.where:
                self.at = [f"{f.name}:{f.lineno}" for f in traceback.extract_stack()[-12:-3]]
        weakref.finalize(storage, self._free, key, size)

    def _free(self, key: int, size: int) -> None:
        if self.alive.get(key) == size:
            del self.alive[key]
            self.now -= size

    def mark(self) -> None:
        self.peak, self.at = self.now, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            self._add(t)
        return out


def watch(method, mode: LiveBytes, rows: list[dict]) -> None:
    """Wrap ``method.loss`` and ``method.after_step`` to record one row per step."""
    loss, after = method.loss, method.after_step
    current: dict = {}

    def watched_loss(model, batch, step):
        mode.mark()
        current.update(step=step, before=mode.now)
        out = loss(model, batch, step)
        current["forward_end"] = mode.now
        return out

    def watched_after(model, step):
        peak, at = mode.peak, mode.at
        result = after(model, step)
        rows.append({**current, "peak": peak, "after": mode.now, "peak_at": at})
        return result

    method.loss, method.after_step = watched_loss, watched_after


def run(name: str, args, overrides: dict) -> list[dict]:
    from accelerate import Accelerator

    from lmprune.training.loop import Clock, LoopSettings, run_loop

    rows: list[dict] = []
    mode = LiveBytes(args.where)
    with mode:  # the model is built inside: its weights count
        feats, collate, net, method, lr = step_time.setup(name, args, "cpu", overrides)
        watch(method, mode, rows)
        run_loop(net, method, feats, collate,
                 LoopSettings(args.steps, args.batch, lr, eval_every=args.steps,
                              progress=False, mixed_precision=args.mixed_precision),
                 Accelerator(cpu=True), Clock())
    return rows


def setting(text: str) -> tuple[str, object]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set {text!r}: use KEY=VALUE")
    return key.strip(), yaml.safe_load(value)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--methods", nargs="+", default=["ft", "apt"], choices=["ft", "apt"])
    p.add_argument("--set", type=setting, action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--where", action="store_true", help="record where each step peaked")
    p.add_argument("--mixed-precision", dest="mixed_precision", default="no",
                   choices=["no", "bf16"], help="train.mixed_precision of the loop")
    p.add_argument("--tiny", action="store_true")
    args = p.parse_args(argv)
    if args.steps < 10:
        p.error("--steps: at least 10 (the schedule prunes from steps/5 to 3/4 of the run)")
    torch.manual_seed(0)
    out = {"batch": args.batch, "seq": args.seq, "steps": args.steps,
           "mixed_precision": args.mixed_precision, "settings": dict(args.set), "runs": {}}
    for name in args.methods:
        start = time.perf_counter()
        out["runs"][name] = run(name, args, dict(args.set))
        print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "live_memory.json").write_text(json.dumps(out, indent=1))
    print("| method | step | before | forward end | peak | after |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, rows in out["runs"].items():
        for r in rows:
            print(f"| {name} | {r['step']} | " + " | ".join(
                f"{r[k] / MIB:.0f}" for k in ("before", "forward_end", "peak", "after")) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
