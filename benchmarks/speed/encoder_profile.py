"""Where a compiled encoder forward's time goes: dense against pruned, GPU kernels by kind.

A RoBERTa-base-shape encoder with 60% of its heads and neurons removed reaches 2.11x of its
2.46x FLOP ratio at batch 128 on the fast path (86%, BENCHMARKS.md; issue 13 asks for 90%).
The FLOP ratio counts matrix products and attention scores; work that scales with the
unpruned hidden size (layer norms, residual adds, embeddings, dropout-free bias adds) does
not shrink. This script times the compiled forward (``CompiledForward``, CUDA graphs on a
GPU) of the dense model and of pruned copies, then records each with ``torch.profiler`` and
sums every GPU kernel's time per forward by kind (GEMM, attention, Triton-fused element-wise,
copies): the kinds that do not shrink with the widths say how far the FLOP ratio can be
reached.

    python benchmarks/speed/encoder_profile.py --out DIR [--batch 128] [--seq 128]
        [--variants dense uniform-60] [--compile-mode reduce-overhead+freezing] [--quick]

Variants: ``uniform-S`` removes S% of every layer's heads and neurons by weight magnitude
with aligned widths (``prune.round_to=auto``), the speed benchmark's plans; ``hidden-60``
prunes the hidden size too (``models.with_hidden``). Writes
DIR/encoder_profile.json and DIR/encoder_profile.md; ``--quick``: the scaled-down shape on
a CPU (no GPU kernels: only the code path).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = ("dense", "uniform-20", "uniform-40", "uniform-60", "uniform-80", "hidden-60")


def variant(dense, name: str):
    """``dense`` itself or a pruned copy: ``uniform-S`` (heads and FFN neurons) or
    ``hidden-S`` (the hidden size too, ``models.with_hidden``)."""
    import models
    from lmprune.arch import describe
    from lmprune.scorers.magnitude import magnitude_scores

    if name == "dense":
        return dense
    if name not in VARIANTS:
        raise SystemExit(f"unknown variant {name!r}; use one of {', '.join(VARIANTS)}")
    structure = describe(dense)
    kind, share = name.split("-")[0], int(name.split("-")[1]) / 100
    scores = magnitude_scores(dense, structure, kinds=("heads", "neurons", "hidden"))
    plan = models.with_hidden if kind == "hidden" else models.uniform
    return models.apply(dense, plan(structure, scores, share, "auto"))


def time_and_profile(fast, inputs: dict, calls: int) -> tuple[float, dict]:
    """Median ms of ``calls`` calls of ``fast(**inputs)``, each synchronised, then the GPU
    kernels of ``calls`` profiled calls per call, by name and kind (``kernel_table``)."""
    from decode_profile import kernel_table
    from lmprune.device import synchronize

    device = inputs["input_ids"].device
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fast(**inputs)
        synchronize(device)
        times.append(1000 * (time.perf_counter() - start))
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(calls):
            fast(**inputs)
        synchronize(device)
    return statistics.median(times), kernel_table(prof, calls)


def profile_forward(model, batch: int, seq: int, mode: str, calls: int) -> dict:
    """Median ms per compiled forward over ``calls`` timed calls, then the kernels of
    ``calls`` profiled calls, per forward and by kind."""
    from lmprune.evaluation.compiled import CompiledForward

    device = next(model.parameters()).device
    fast = CompiledForward(model, mode)
    inputs = {"input_ids": torch.randint(5, model.config.vocab_size - 1, (batch, seq),
                                         device=device)}
    with torch.no_grad():
        for _ in range(3):  # compile, capture, warm
            fast(**inputs)
        ms, table = time_and_profile(fast, inputs, calls)
    return {"batch": batch, "seq": seq, "first_call_s": max(fast.first_call_s.values(),
                                                            default=None), "ms_per_forward": ms,
            "samples_per_s": 1000 * batch / ms, "kernel_ms": table["total_us"] / 1000,
            "busy_share": table["total_us"] / 1000 / ms, **table}


def markdown(result: dict) -> str:
    lines = [f"# Encoder forward profile: {result['shape']} ({result['device']})", "",
             f"torch {result['torch']}, transformers {result['transformers']}, compile mode "
             f"{result['compile_mode']}, batch {result['batch']} x {result['seq']} tokens", "",
             "| variant | widths | ms per forward | speedup | FLOP ratio | share of ideal | "
             "GEMM ms | attention ms | fused element-wise ms | other ms |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    dense = result["runs"][0]["ms_per_forward"]
    for run in result["runs"]:
        kinds = {k: v / 1000 for k, v in run["kinds_us"].items()}
        speedup = dense / run["ms_per_forward"]
        other = sum(v for k, v in kinds.items() if k not in ("gemm", "attention", "triton"))
        widths = run["widths"]
        lines.append(f"| {run['variant']} | FFN {widths['ffn']}, {widths['heads']} heads | "
                     f"{run['ms_per_forward']:.3f} | "
                     f"{speedup:.2f}x | {run['flop_ratio']:.2f}x | "
                     f"{100 * speedup / run['flop_ratio']:.0f}% | {kinds.get('gemm', 0):.3f} | "
                     f"{kinds.get('attention', 0):.3f} | {kinds.get('triton', 0):.3f} | "
                     f"{other:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    import transformers

    import models
    from lmprune.evaluation.ideal import ideal_speedups

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--variants", nargs="+", default=["dense", "uniform-60"], choices=VARIANTS)
    p.add_argument("--compile-mode", default="reduce-overhead+freezing")
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    # speedups are against dense, measured first in the same process
    args.variants = ["dense", *[v for v in args.variants if v != "dense"]]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    quick = args.quick or device.type != "cuda"
    dense = models.build("roberta-base", device, dtype, quick)
    result = {"shape": "roberta-base", "device": torch.cuda.get_device_name(device)
              if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "transformers": transformers.__version__, "compile_mode": args.compile_mode,
              "batch": args.batch, "seq": args.seq, "runs": []}
    for name in args.variants:
        model = variant(dense, name)
        run = profile_forward(model, args.batch, args.seq, args.compile_mode, args.calls)
        run.update(variant=name, widths=models.widths(model),
                   flop_ratio=ideal_speedups(dense, model, args.seq)["flops"])
        result["runs"].append(run)
        del model
    from decode_profile import write

    write(Path(args.out), "encoder_profile", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
