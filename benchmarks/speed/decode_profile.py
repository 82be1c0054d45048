"""Where a decode step's time goes on the fast path: the GPU kernels of one step, by kind.

The speed benchmark measures dense LLaMA-7B-shape decoding at 1.34-1.89x its weight-read
floor (BENCHMARKS.md). This script builds the model (random bf16 weights from a config, on
the device), runs lmprune's fast path (``Decoder(model, "compile")``: stock StaticCache,
the step compiled into a CUDA graph), times the decode steps, then records them with
``torch.profiler`` and sums every GPU kernel's time per step, grouped by kind (GEMM,
attention, Triton-fused element-wise, copies, other). The kernel sum against the wall time
per step says how much of a step the GPU is busy; each kind against the weight-read floor
says where the excess is.

    python benchmarks/speed/decode_profile.py --out DIR [--shape llama-7b] [--batch 1 16]
        [--compile-mode reduce-overhead] [--steps 31] [--no-cudnn-attention] [--freezing]
        [--attn sdpa|flex_attention] [--variants dense uniform-20 ...] [--cache-step 256 64]
        [--no-kernels] [--quick]

``--no-cudnn-attention``: PyTorch's scaled-dot-product attention without its cuDNN backend
(Flash / memory-efficient / math instead; on an H200 bf16 picks cuDNN by default).
``--freezing``: Inductor's ``freezing`` (weights become constants of the compiled graph,
which lets it concatenate the matrix products that read one input: q/k/v and gate/up).
``--attn flex_attention``: transformers' FlexAttention integration instead of scaled-dot-product
attention (under torch.compile a one-token query takes FlexAttention's split-KV decoding kernel).

``--variants``: also profile pruned copies of the model, side by side with dense (in memory,
stock modules; plans by weight magnitude, which give the same widths as the speed benchmark's
Taylor plans: ``uniform-20`` every layer at 20%, aligned; ``llm-pruner-20`` LLM-Pruner's
layout; ``sublayers-20`` whole sublayers removed), to see which kernels keep a pruned step
from shrinking by its weight-byte ratio.

``--cache-step``: the static cache's length is the prompt plus the new tokens rounded up to a
multiple of this (``lmprune.generation.fast.CACHE_STEP``, default 256); masked SDPA reads every
slot, so a smaller step reads fewer empty ones. Several: each variant profiled under each.

Writes DIR/decode_profile.json and DIR/decode_profile.md. ``--quick``: the scaled-down shape
(runs on a CPU; no GPU kernels there, so only the code path is checked).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from lmprune.generation import fast
from lmprune.generation.fast import CACHE_STEP

sys.path.insert(0, str(Path(__file__).resolve().parent))

KINDS = (("attention", ("flash", "fmha", "attention", "sdpa", "efficient_attention")),
         ("gemm", ("gemm", "cutlass", "nvjet", "sm90_xmma", "sm80_xmma", "gemv", "splitk")),
         ("triton", ("triton",)),
         ("copy", ("memcpy", "memset", "copy", "cat")))


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, keys in KINDS:
        if any(k in low for k in keys):
            return kind
    return "other"


def kernel_table(prof, steps: int) -> dict:
    """GPU kernel time per step (us), per kernel name and per kind, from a profiler run."""
    per_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for event in prof.events():
        if getattr(event, "device_type", None) != torch.autograd.DeviceType.CUDA:
            continue
        slot = per_name[event.name]
        slot[0] += event.device_time_total if hasattr(event, "device_time_total") \
            else event.cuda_time_total
        slot[1] += 1
    names = sorted(per_name.items(), key=lambda kv: -kv[1][0])
    kinds: dict[str, float] = defaultdict(float)
    for name, (us, _) in names:
        kinds[kind_of(name)] += us / steps
    return {"total_us": sum(v[0] for _, v in names) / steps,
            "kinds_us": dict(kinds),
            "kernels": [{"name": n[:160], "kind": kind_of(n), "us_per_step": us / steps,
                         "calls_per_step": calls / steps} for n, (us, calls) in names[:40]]}


VARIANTS = ("dense", "uniform-20", "llm-pruner-20", "sublayers-20")


def variant(dense, name: str):
    """``dense`` itself, or a pruned copy of it (see ``--variants``)."""
    import models
    from lmprune.arch import describe
    from lmprune.scorers.magnitude import magnitude_scores

    if name == "dense":
        return dense
    structure = describe(dense)
    if name == "sublayers-20":
        return models.apply(dense, models.sublayers(dense, structure, 0.2))
    scores = magnitude_scores(dense, structure, kinds=("heads", "neurons"))
    plan = models.uniform(structure, scores, 0.2, "auto") if name == "uniform-20" else \
        models.llm_pruner(structure, scores, 0.2, "auto")
    return models.apply(dense, plan)


def profile_batch(model, batch: int, prompt: int, steps: int, compile_mode: str,
                  attention: str = "sdpa", kernels: bool = True) -> dict:
    from lmprune.device import synchronize
    from lmprune.generation.bench import _run  # measure_decoding's timed generation
    from lmprune.generation.fast import Decoder

    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    allocated_before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    decoder = Decoder(model, "compile", compile_mode, attention)
    filled = decoder.filled
    ids = torch.randint(100, model.config.vocab_size - 1, (batch, prompt), device=device)
    started = time.perf_counter()
    _run(decoder, ids, steps + 1)  # compiles, captures the graph
    first = time.perf_counter() - started
    walls = [_run(decoder, ids, steps + 1)[1] * 1000 / steps for _ in range(3)]
    state = decoder.prefill(ids, steps + 1)
    slots = state.cache.get_max_length()
    synchronize(device)
    table = _kernels(decoder, state, steps) if kernels else None
    wall = sorted(walls)[1]
    memory = {} if device.type != "cuda" else {
        "allocated_before_mb": allocated_before / 1e6,
        "peak_mb": torch.cuda.max_memory_allocated(device) / 1e6,
        "held_after_mb": torch.cuda.memory_allocated(device) / 1e6}
    del decoder, state
    return {"batch": batch, "decode_attention": "filled" if filled else "sdpa", **memory,
            "cache_slots": slots, "first_call_s": first, "ms_per_step": wall, "ms_per_step_runs": walls,
            **({} if table is None else {"kernel_ms_per_step": table["total_us"] / 1000,
                                         "busy_share": table["total_us"] / 1000 / wall,
                                         **table})}


def _kernels(decoder, state, steps: int) -> dict:
    """:func:`kernel_table` of ``steps`` decode steps from ``state``, under the profiler."""
    from lmprune.device import synchronize

    device = state.token.device
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        decoder.decode(state, steps)
        synchronize(device)
    return kernel_table(prof, steps)


def _block_mask_without_compile(create, *args, _compile=False, **kwargs):
    return create(*args, **kwargs)


def use_flex_attention_in_graphs() -> None:
    """transformers 5.x builds FlexAttention's block mask with ``create_block_mask(...,
    _compile=True)``, which recent torch deprecates with a warning that Dynamo cannot trace
    (the whole-graph compile of the decode step fails); inside that compiled step the mask is
    compiled anyway, so it is built without the flag."""
    import functools

    import transformers.masking_utils as masking
    from torch.nn.attention.flex_attention import create_block_mask

    masking.create_block_mask = functools.partial(_block_mask_without_compile, create_block_mask)


def write(out: Path, stem: str, result: dict, report: str) -> None:
    """``out/stem.json`` (the result) and ``out/stem.md`` (the report, also printed)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (out / f"{stem}.md").write_text(report)
    print(report)


def markdown(result: dict) -> str:
    lines = [f"# Decode step profile: {result['shape']} ({result['device']})", "",
             f"torch {result['torch']}, transformers {result['transformers']}, compile mode "
             f"{result['compile_mode']}, cuDNN attention {result['cudnn_attention']}, freezing "
             f"{result['freezing']}, attention {result.get('attn', 'sdpa')}, prompt {result['prompt']}, {result['steps']} steps; "
             f"weight-read floor {result['floor_ms']:.2f} ms (weights {result['weight_gb']:.2f} "
             f"GB at {result['bandwidth_gbs']:.0f} GB/s measured copy bandwidth)", ""]
    for run in result["runs"]:
        name = run.get("variant", "dense")
        floor = run.get("floor_ms", result["floor_ms"])
        lines += [f"## {'' if name == 'dense' else name + ', '}batch {run['batch']}"
                  f"{', ' + run['decode_attention'] + ' attention' if 'decode_attention' in run else ''}"
                  f"{', ' + str(run['cache_slots']) + ' cache slots' if 'cache_slots' in run else ''}: "
                  f"{run['ms_per_step']:.2f} ms/step wall, "
                  + (f"{run['kernel_ms_per_step']:.2f} ms of kernels ({100 * run['busy_share']:.0f}% "
                     f"busy), " if "kernels" in run else "")
                  + f"{run['ms_per_step'] / floor:.2f}x {'its' if name != 'dense' else 'the'} floor"
                  + (f"; GPU memory {run['allocated_before_mb']:.0f} MB before the decoder, "
                     f"peak {run['peak_mb']:.0f} MB" if "peak_mb" in run else ""), ""]
        if "kernels" not in run:
            continue
        lines += ["| kind | ms per step | share of kernel time |", "| --- | ---: | ---: |"]
        total = max(run["kernel_ms_per_step"], 1e-9)
        for kind, us in sorted(run["kinds_us"].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {kind} | {us / 1000:.3f} | {100 * us / 1000 / total:.1f}% |")
        lines += ["", "| kernel | kind | us per step | calls per step |", "| --- | --- | ---: | ---: |"]
        for k in run["kernels"][:15]:
            lines.append(f"| `{k['name'][:90]}` | {k['kind']} | {k['us_per_step']:.1f} | "
                         f"{k['calls_per_step']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    import transformers

    import models
    from lmprune.evaluation.ideal import weight_bytes
    from measure import bandwidth

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--shape", default="llama-7b", choices=["llama-7b", "smollm2-135m"])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--steps", type=int, default=31)
    p.add_argument("--compile-mode", default="reduce-overhead")
    p.add_argument("--no-cudnn-attention", action="store_true")
    p.add_argument("--freezing", action="store_true")
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "flex_attention"])
    p.add_argument("--variants", nargs="+", default=["dense"], choices=VARIANTS)
    p.add_argument("--decode-attention", nargs="+", default=["sdpa"], choices=["sdpa", "filled"],
                   help="the decode steps' attention (lmprune.generation.fast.ATTENTIONS); "
                        "several: each variant profiled under each")
    p.add_argument("--cache-step", type=int, nargs="+", default=[CACHE_STEP],
                   help="static cache sizes are rounded up to a multiple of this "
                        "(lmprune.generation.fast.CACHE_STEP); several: each profiled")
    p.add_argument("--no-kernels", action="store_true",
                   help="wall time only, no profiler pass (for long runs: the profiler "
                        "records every kernel of every step)")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if min(args.cache_step) < 1:
        p.error("--cache-step must be >= 1")
    if args.no_cudnn_attention:
        torch.backends.cuda.enable_cudnn_sdp(False)
    if args.freezing:
        import torch._inductor.config as inductor

        inductor.freezing = True
    if args.attn == "flex_attention":
        use_flex_attention_in_graphs()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = models.build(args.shape, device, dtype, args.quick or device.type != "cuda",
                         attn=args.attn)
    bw = bandwidth(device, args.quick or device.type != "cuda")["bytes_per_s"]
    result = {"shape": args.shape, "device": torch.cuda.get_device_name(device)
              if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "transformers": transformers.__version__, "compile_mode": args.compile_mode,
              "cudnn_attention": not args.no_cudnn_attention, "freezing": args.freezing,
              "attn": args.attn, "prompt": args.prompt, "steps": args.steps, "weight_gb": weight_bytes(model) / 1e9,
              "bandwidth_gbs": bw / 1e9, "floor_ms": 1000 * weight_bytes(model) / bw,
              "runs": []}
    for name in args.variants:
        pruned = variant(model, name)
        floor = 1000 * weight_bytes(pruned) / bw
        for attention, step, b in itertools.product(args.decode_attention, args.cache_step,
                                                    args.batch):
            fast.CACHE_STEP = step
            try:
                run = profile_batch(pruned, b, args.prompt, args.steps, args.compile_mode,
                                    attention, kernels=not args.no_kernels)
            finally:
                fast.CACHE_STEP = CACHE_STEP
            result["runs"].append({"variant": name, "floor_ms": floor, "cache_step": step,
                                   "widths": models.widths(pruned), **run})
        del pruned
    write(Path(args.out), "decode_profile", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
