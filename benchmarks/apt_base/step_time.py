"""Training step time of APT against full fine-tuning, with no data files: the loop alone.

A BERT-base-shape classifier (12 layers, hidden 768, 12 heads, FFN 3072, random weights, no
dropout) trains on random token batches (batch 32 x 128 tokens, the apt_base schedule: 80 steps,
APT pruning from step 16 to 60 in 8 events to 40% of the body, self-distillation on) through
lmprune's training loop, once with full fine-tuning and once with APT; the loop's own clock
(``training_cost``: mean seconds per step of each 16-step interval, and the interval's peak
memory) is recorded. What it isolates: the cost of APT's per-step work on the device, without
tokenization, evaluation or model loading. The random labels make the accuracy meaningless.

    python benchmarks/apt_base/step_time.py --out DIR [--device cuda] [--tiny]
        [--variant NAME:KEY=VALUE[,KEY=VALUE...] ...] [--arch mpnet] [--mixed-precision bf16]

``--arch mpnet``: all-mpnet-base-v2's shape instead (MPNet, eager attention with a relative
position bias, dropout 0.1 as in its config), the model of the apt_base benchmark;
``--mixed-precision bf16``: the loop's ``train.mixed_precision``. Writes DIR/step_time.json.
``--tiny``: a 2-layer shape on the CPU (the code path only).
``--variant``: one more APT run with these ``apt.*`` settings on top of the schedule's, e.g.
``--variant fp32-teacher:teacher_dtype=model --variant short:distill_epochs=1.1``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def model(shape: dict, device: str, arch: str = "bert"):
    from transformers import (BertConfig, BertForSequenceClassification, MPNetConfig,
                              MPNetForSequenceClassification)

    torch.manual_seed(0)
    if arch == "mpnet":
        config = MPNetConfig(**shape, vocab_size=30527, num_labels=2)
        return MPNetForSequenceClassification(config).to(device)
    if arch != "bert":
        raise ValueError(f"arch {arch!r}: use bert or mpnet")
    config = BertConfig(**shape, vocab_size=30522, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, num_labels=2)
    return BertForSequenceClassification(config).to(device)


def batches(n: int, seq: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    feats = [{"input_ids": torch.randint(1000, 30000, (seq,), generator=g),
              "label": i % 2} for i in range(n)]

    def collate(fs):
        ids = torch.stack([f["input_ids"] for f in fs])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                "labels": torch.tensor([f["label"] for f in fs])}
    return feats, collate


def variant(text: str) -> tuple[str, dict]:
    """``NAME:KEY=VALUE,...`` -> (name, APTConfig overrides), values read as YAML."""
    import yaml

    name, _, settings = text.partition(":")
    if not name or not settings:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: use NAME:KEY=VALUE[,KEY=VALUE]")
    pairs = [item.split("=", 1) for item in settings.split(",")]
    if any(len(p) != 2 for p in pairs):
        raise argparse.ArgumentTypeError(f"--variant {text!r}: every setting is KEY=VALUE")
    return name, {k.strip(): yaml.safe_load(v) for k, v in pairs}


def setup(method_name: str, args, device: str, overrides: dict | None = None):
    """The data, model and method of one run (``ft``, or APT with the apt_base schedule
    scaled to ``args.steps`` and ``overrides`` of its settings): ``(feats, collate, net,
    method, lr)``."""
    from lmprune.config.train_schema import APTConfig
    from lmprune.training.apt import APTMethod
    from lmprune.training.method import TrainMethod

    steps = args.steps
    feats, collate = batches(steps * args.batch // 2, args.seq)  # 2 epochs
    net = model(TINY if args.tiny else BASE, device, getattr(args, "arch", "bert"))
    if method_name == "ft":
        method, lr = TrainMethod(), 2e-5
        return feats, collate, method.setup(net, None), method, lr
    cfg = APTConfig(prune_start=steps // 5, prune_stop_epochs=1.5, events=8, **(overrides or {}))
    method = APTMethod(cfg, keep=0.4, total_steps=steps, steps_per_epoch=steps // 2,
                       mixed_precision=getattr(args, "mixed_precision", "no"))
    return feats, collate, method.setup(net), method, 5e-4


def run(method_name: str, args, device: str, overrides: dict | None = None,
        watch=None) -> dict:
    """One timed run; ``watch(method)`` (optional) may wrap the method's hooks first
    (``op_count.py`` and ``step_profile.py`` wrap ``after_step``)."""
    import gc

    from accelerate import Accelerator

    from lmprune.training.loop import Clock, LoopSettings, run_loop

    gc.collect()  # nothing of the previous run may count in this one's peaks
    before = None
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated() / 1e6
    steps, batch = args.steps, args.batch
    feats, collate, net, method, lr = setup(method_name, args, device, overrides)
    if watch is not None:
        watch(method)
    clock = Clock()
    start = time.perf_counter()
    result = run_loop(net, method, feats, collate,
                      LoopSettings(steps, batch, lr, eval_every=args.interval, progress=False,
                                       mixed_precision=getattr(args, "mixed_precision", "no")),
                      Accelerator(cpu=device == "cpu"), clock)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return {"method": method_name, "settings": overrides or {}, "train_seconds": clock.seconds,
            "allocated_before_mb": before,
            "wall_seconds": time.perf_counter() - start,
            "intervals": [{k: c[k] for k in ("step", "step_seconds", "memory_mb", "params")}
                          for c in result.costs]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--interval", type=int, default=16)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--variant", type=variant, action="append", default=[],
                   metavar="NAME:KEY=VALUE,...")
    p.add_argument("--arch", choices=["bert", "mpnet"], default="bert")
    p.add_argument("--mixed-precision", dest="mixed_precision", default="no",
                   choices=["no", "bf16"])
    args = p.parse_args(argv)
    if args.tiny:
        args.steps, args.batch, args.seq, args.interval = 20, 4, 16, 4
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    import lmprune

    out = {"device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
           "lmprune": str(Path(lmprune.__file__).parent), "steps": args.steps,
           "batch": args.batch, "seq": args.seq, "arch": args.arch,
           "mixed_precision": args.mixed_precision,
           "runs": [run(m, args, args.device) for m in ("ft", "apt")]
           + [run(name, args, args.device, settings) for name, settings in args.variant]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_time.json").write_text(json.dumps(out, indent=1))
    ft = out["runs"][0]
    for r in out["runs"]:
        print(f"{r['method']}: " + ", ".join(f"{c['step']}: {c['step_seconds'] * 1000:.1f} ms"
                                            for c in r["intervals"]))
        peaks = [c["memory_mb"] for c in r["intervals"]]
        if ft["intervals"][0]["memory_mb"]:
            share = max(peaks) / max(c["memory_mb"] for c in ft["intervals"])
            print(f"   peak per interval MB {[round(p) for p in peaks]}; "
                  f"{r['train_seconds']:.2f} s; peak {100 * share:.1f}% of FT's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
