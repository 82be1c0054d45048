"""Measure a decoder's prefill and decode throughput: eager, static cache, or compiled."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lmprune.cli._common import add_command, print_table
from lmprune.cli._device import add_device_argument
from lmprune.cli.generate import DECODE_ATTENTION_HELP, DECODE_ATTENTIONS
from lmprune.errors import LmpruneError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "bench", help="measure inference speed (decoders: prefill and decode; "
                                  "encoders: forward throughput), eager or compiled",
        description="Decoders (causal LMs): time the prompt's forward pass (prefill) and the "
                    "single-token decode steps apart, per batch size, in transformers' default "
                    "mode (dynamic KV cache, eager), with a static KV cache (--static-cache), or "
                    "with a static cache and a torch.compile'd decode step (--compile; CUDA "
                    "graphs on a GPU). Random prompts; one warm-up run (compilation) then the "
                    "median of --repeats runs. On a known GPU the weight-read floor of a decode "
                    "step (weight bytes / memory bandwidth) is printed beside it. Encoders and "
                    "other models: forward throughput on random ids of --seq-len tokens, eager "
                    "or with the forward compiled (--compile: CUDA graphs on a GPU), the "
                    "protocol of lmprune.evaluation.efficiency.measure_inference.",
        examples=["lmprune bench runs/taylor/model --compile",
                  "lmprune bench smollm2-135m --modes eager,compile --batch-sizes 1,8,32",
                  "lmprune bench runs/ri/model --static-cache --device cpu --json speed.json",
                  "lmprune bench runs/apt/model --modes eager,compile --batch-sizes 32,128"])
    parser.add_argument("model", metavar="MODEL", help="model directory, alias or hub id")
    parser.add_argument("--static-cache", action="store_true",
                        help="use transformers' StaticCache (eager steps)")
    parser.add_argument("--compile", action="store_true",
                        help="static cache and a compiled decode step")
    parser.add_argument("--modes", help="comma-separated modes to compare: eager, static, compile")
    parser.add_argument("--compile-mode", default=None,
                        help="torch.compile mode of the compile mode: reduce-overhead (default "
                             "on a GPU: CUDA graphs), max-autotune (also tunes GEMM kernels; "
                             "slow to compile), default, max-autotune-no-cudagraphs; "
                             "+freezing after the first two: weights as graph constants, "
                             "q/k/v and gate/up products concatenated (faster decoding, more "
                             "weight memory)")
    parser.add_argument("--decode-attention", choices=DECODE_ATTENTIONS, default="sdpa",
                        help="decoders: " + DECODE_ATTENTION_HELP)
    parser.add_argument("--batch-sizes", default="1,8,32", help="comma-separated (default 1,8,32)")
    parser.add_argument("--prompt-len", type=int, default=128, help="prompt tokens (default 128)")
    parser.add_argument("--new-tokens", type=int, default=64,
                        help="tokens generated per run, >= 2 (default 64)")
    parser.add_argument("--seq-len", type=int, default=128,
                        help="encoders: tokens per sequence (default 128)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs (default 3; encoders: at least 10)")
    parser.add_argument("--dtype", default="auto",
                        help="auto (bfloat16 on a GPU, float32 on a CPU), float32, bfloat16, "
                             "float16")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    add_device_argument(parser)
    return parser


def _modes(args: argparse.Namespace) -> list[str]:
    from lmprune.generation import MODES

    if args.modes:
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        bad = [m for m in modes if m not in MODES]
        if bad or not modes:
            raise LmpruneError(f"--modes: unknown {bad or args.modes!r}; use {', '.join(MODES)}")
        return modes
    return ["compile" if args.compile else "static" if args.static_cache else "eager"]


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(b < 1 for b in sizes):
        raise LmpruneError(f"--batch-sizes: expected positive integers like 1,8,32, got {text!r}")
    return sizes


def _load(name: str, device, dtype):
    """A saved directory (any lmprune format), or an alias / hub id with its default head
    (causal LM for decoders, the classification head for encoders)."""
    from lmprune.cli.eval import load_any

    if (Path(name) / "config.json").exists():
        return load_any(name, device, dtype)[0]
    from lmprune.zoo import load_model

    return load_model(name, None, dtype=dtype).model.eval().to(device)


def _is_decoder(model) -> bool:
    config = getattr(model, "config", None)
    return (config is not None and not getattr(config, "is_encoder_decoder", False)
            and hasattr(model, "generate") and bool(getattr(model, "can_generate", lambda: True)()))


def run(args: argparse.Namespace) -> int:
    import torch

    from lmprune.device import announce, describe_device, resolve_device, resolve_dtype
    from lmprune.evaluation.ideal import bandwidth_of, weight_bytes, weight_read_floor_ms
    from lmprune.generation.bench import measure_decoding

    from lmprune.evaluation.compiled import check_mode

    modes, sizes = _modes(args), _sizes(args.batch_sizes)
    if args.compile_mode is not None:
        check_mode(args.compile_mode)
    device = resolve_device(args.device or "auto")
    dtype = resolve_dtype(args.dtype, device, "inference")
    model = _load(args.model, device, dtype)
    announce("bench", device, dtype)
    if not _is_decoder(model):
        from lmprune.cli._bench_forward import bench_forward

        return bench_forward(args, model, modes, sizes, device, dtype)
    bandwidth = bandwidth_of(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    floor = weight_read_floor_ms(model, bandwidth) if bandwidth else None
    rows = []
    for mode in modes:
        for batch in sizes:
            r = measure_decoding(model, batch, args.prompt_len, args.new_tokens, mode,
                                 args.repeats, compile_mode=args.compile_mode or "reduce-overhead",
                                 attention=args.decode_attention)
            rows.append(r.as_dict() | {"floor_ms": floor})
    print_table([{**r, "prefill": f"{r['prefill_tokens_per_s']:.0f}",
                  "decode": f"{r['decode_tokens_per_s']:.1f}",
                  "ms": f"{r['decode_ms_per_step']:.2f}",
                  "floor": "-" if floor is None else f"{floor:.2f}",
                  "first": f"{r['first_call_s']:.1f} s",
                  "mem": f"{r['peak_memory_mb']:.0f} MB" if r["peak_memory_mb"] else "-"}
                 for r in rows],
                [("mode", "MODE"), ("batch_size", "BATCH"), ("prefill", "PREFILL TOK/S"),
                 ("decode", "DECODE TOK/S"), ("ms", "MS/STEP"), ("floor", "FLOOR MS"),
                 ("first", "FIRST CALL"), ("mem", "PEAK MEM")])
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"model": args.model, "device": describe_device(device),
                                   "dtype": str(dtype), "weight_bytes": weight_bytes(model),
                                   "bandwidth": bandwidth, "results": rows}, indent=2))
        print(f"written: {out}")
    return 0
