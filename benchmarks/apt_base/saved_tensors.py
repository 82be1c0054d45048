"""What autograd keeps for backward in one training step, per module: FT against APT.

A training step's activation memory is what the forward pass saves for backward. This runs
``step_time.py``'s loop (BERT-base shape, random weights and tokens, the apt_base schedule)
on the CPU up to step ``--step`` and records, for that step's forward pass, every tensor
autograd saves (``torch.autograd.graph.saved_tensors_hooks``): once per storage, parameters
and buffers left out, grouped by the module that was running (layer numbers folded) and shape.
A frozen linear saves nothing of its input; an adapter keeps its input for its gradient.

    python benchmarks/apt_base/saved_tensors.py --out DIR [--batch 2] [--step 2] [--tiny]
        [--mixed-precision bf16]

``--mixed-precision bf16`` runs each forward under the training loop's bfloat16 autocast
(``train.mixed_precision``); each group names the dtype it is saved in.

Writes DIR/saved_tensors.json (MB per module and shape, per method) and prints the totals;
bytes scale with the batch, so ``--batch 2`` x 16 gives batch 32. ~1 min on 2 cores.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_time  # noqa: E402


def _module_names(net) -> list[str]:
    """A stack of the running modules' names, kept by forward hooks."""
    stack: list[str] = []

    def leave(module, inputs, output) -> None:  # returns None: the output stays the module's
        stack.pop()

    for name, module in net.named_modules():
        module.register_forward_pre_hook(lambda m, i, n=name: stack.append(n) and None)
        module.register_forward_hook(leave)
    return stack


def saved(method_name: str, args) -> dict:
    """MB saved for backward by the forward pass of step ``args.step``, per module and shape."""
    from lmprune.training.loop import _autocast, build_optimizer

    feats, collate, net, method, lr = step_time.setup(method_name, args, "cpu")
    running = _module_names(net)
    optimizer = build_optimizer(method, net, lr, 0.0)
    net.train()
    found: dict[int, tuple] = {}
    cast = ((lambda: _autocast(None, torch.device("cpu"), "bf16"))  # noqa: E731
            if args.mixed_precision == "bf16" else contextlib.nullcontext)
    for step in range(args.step + 1):
        batch = collate(feats[step * args.batch:(step + 1) * args.batch])
        if step < args.step:
            with cast():
                loss = method.loss(net, batch, step)
            loss.backward()
            method.after_backward(net, step)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if method.after_step(net, step):
                optimizer = build_optimizer(method, net, lr, 0.0, previous=optimizer,
                                            moves=method.take_moves())
            continue
        own = {t.untyped_storage().data_ptr() for t in [*net.parameters(), *net.buffers()]}

        def pack(t):
            key = t.untyped_storage().data_ptr()
            if key not in own and key not in found:
                where = re.sub(r"\.\d+(\.|$)", r".N\1", running[-1] if running else "")
                found[key] = (t.untyped_storage().nbytes(), where, tuple(t.shape),
                              str(t.dtype).removeprefix("torch."))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), cast():
            method.loss(net, batch, step)
    groups: collections.Counter = collections.Counter()
    by_dtype: collections.Counter = collections.Counter()
    for nbytes, where, shape, dtype in found.values():
        groups[f"{where or '(outside modules)'} {list(shape)} {dtype}"] += nbytes
        by_dtype[dtype] += nbytes
    return {"method": method_name, "step": args.step,
            "total_mb": round(sum(groups.values()) / 1e6, 3),
            "by_dtype_mb": {k: round(v / 1e6, 3) for k, v in by_dtype.most_common()},
            "by_module": {k: round(v / 1e6, 3) for k, v in groups.most_common()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--step", type=int, default=2, help="the step measured (0-based)")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--mixed-precision", dest="mixed_precision", default="no",
                   choices=["no", "bf16"], help="train.mixed_precision of the forward passes")
    args = p.parse_args(argv)
    args.steps, args.interval = 80, 16
    if args.tiny:
        args.steps, args.seq = 20, 16
    torch.manual_seed(0)
    runs = [saved(m, args) for m in ("ft", "apt")]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "saved_tensors.json").write_text(json.dumps(
        {"shape": step_time.TINY if args.tiny else step_time.BASE, "batch": args.batch,
         "seq": args.seq,
         "mixed_precision": args.mixed_precision, "runs": runs}, indent=1))
    for r in runs:
        print(f"{r['method']} step {r['step']}: {r['total_mb']} MB saved for backward "
              f"{r['by_dtype_mb']}")
        for k, v in list(r["by_module"].items())[:14]:
            print(f"  {v:9.2f}  {k}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
