"""Peak memory of one training step of an MPNet-base-shape classifier, by attention backend.

``lmprune train`` runs its loop with cuDNN's attention left out
(:func:`lmprune.device.attention_for_varied_shapes`). This checks what that costs in memory:
a randomly initialised MPNet of all-mpnet-base-v2's shape (from its config, no weights needed)
takes one forward and backward at batch 32 x 128 in float32, once with PyTorch's default
backend choice and once inside the context, and the peak allocated memory of each is recorded
with the attention implementation transformers chose and the versions.

    python benchmarks/apt_base/attention_memory.py --out DIR

Writes DIR/attention_memory.json and prints it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch


def step_peak(model, batch, context) -> float:
    model.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with context:
        model(**batch).loss.backward()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 1e6


def main(argv=None) -> int:
    import transformers
    from transformers import MPNetConfig, MPNetForSequenceClassification

    from lmprune.device import attention_for_varied_shapes

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a GPU", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    config = MPNetConfig(vocab_size=30527, num_labels=2)  # base shape: 12 x 768, 12 heads
    model = MPNetForSequenceClassification(config).cuda().train()
    ids = torch.randint(1000, 30000, (args.batch, args.seq), device="cuda")
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "labels": torch.zeros(args.batch, dtype=torch.long, device="cuda")}
    runs = {}
    for name, make in (("default", contextlib.nullcontext),
                       ("no-cudnn", lambda: attention_for_varied_shapes(torch.device("cuda")))):
        step_peak(model, batch, make())  # warm-up: workspaces and kernels chosen
        runs[name] = round(step_peak(model, batch, make()), 1)
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "transformers": transformers.__version__,
           "attn_implementation": getattr(model.config, "_attn_implementation", None),
           "batch": args.batch, "seq": args.seq, "peak_mb": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "attention_memory.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
