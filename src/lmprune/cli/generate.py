"""Generate text with a dense or pruned decoder on the fast path (static cache, compiled step)."""
from __future__ import annotations

import argparse
import time
from typing import Any

from lmprune.cli._common import add_command
from lmprune.cli._device import add_device_argument
from lmprune.errors import LmpruneError

MODES = ("auto", "eager", "static", "compile")
#: lmprune.generation.fast.ATTENTIONS, spelled out so that building the parser imports no torch
DECODE_ATTENTIONS = ("sdpa", "filled")
DECODE_ATTENTION_HELP = ("attention of the decode steps over the static cache: sdpa (default: "
                         "transformers' masked SDPA over every slot) or filled (only the slots "
                         "that hold keys, FlexAttention; same tokens; faster for long "
                         "generations: 1.19x at batch 16 for 992 new tokens on an H200, level "
                         "for short ones; BENCHMARKS.md)")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "generate", help="generate text on the fast path (static cache + compile)",
        description="Greedy generation for each --prompt with a dense or pruned causal LM (a "
                    "directory saved by lmprune, any Hugging Face directory, a model alias or "
                    "a hub id). The default mode `auto` uses transformers' static KV cache and "
                    "a torch.compile'd decode step (CUDA graphs) on a GPU, the static cache "
                    "alone on a CPU; the tokens are those of model.generate(do_sample=False).",
        examples=["lmprune generate runs/taylor/model --prompt 'The capital of France is'",
                  "lmprune generate smollm2-135m --prompt 'Hello' --prompt 'Once upon' "
                  "--max-new-tokens 32",
                  "lmprune generate smollm2-135m --chat --prompt 'Name three fruits.'",
                  "lmprune generate runs/ri/model --prompt 'Hi' --mode eager --device cpu"])
    parser.add_argument("model", metavar="MODEL", help="model directory, alias or hub id")
    parser.add_argument("--prompt", action="append", required=True,
                        help="text to continue (repeat for several prompts)")
    parser.add_argument("--max-new-tokens", type=int, default=64, metavar="N",
                        help="tokens to generate per prompt (default 64)")
    parser.add_argument("--mode", choices=MODES, default="auto",
                        help="auto (default): compile on a GPU, static cache on a CPU; eager: "
                             "transformers' dynamic cache, no compilation")
    parser.add_argument("--decode-attention", choices=DECODE_ATTENTIONS, default="sdpa",
                        help=DECODE_ATTENTION_HELP)
    parser.add_argument("--chat", action="store_true",
                        help="wrap each prompt in the tokenizer's chat template")
    parser.add_argument("--dtype", default="auto",
                        help="auto (bfloat16 on a GPU, float32 on a CPU), float32, bfloat16, "
                             "float16")
    add_device_argument(parser)
    return parser


def _encode(tokenizer, prompt: str, chat: bool):
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise LmpruneError("--chat: this tokenizer has no chat template; leave --chat out")
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                             add_generation_prompt=True, return_tensors="pt",
                                             return_dict=True)["input_ids"]
    return tokenizer(prompt, return_tensors="pt")["input_ids"]


def run(args: argparse.Namespace) -> int:
    from lmprune.cli.eval import load_any
    from lmprune.device import announce, resolve_device, resolve_dtype
    from lmprune.generation import fast_generate

    if args.max_new_tokens < 1:
        raise LmpruneError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    device = resolve_device(args.device or "auto")
    dtype = resolve_dtype(args.dtype, device, "inference")
    model, tokenizer = load_any(args.model, device, dtype)
    if tokenizer is None:
        raise LmpruneError(f"{args.model} has no tokenizer; generate needs one")
    mode = args.mode if args.mode != "auto" else ("compile" if device.type == "cuda" else "static")
    announce("generate", device, dtype)
    for prompt in args.prompt:  # one at a time: the fast path takes unpadded prompts
        ids = _encode(tokenizer, prompt, args.chat)
        start = time.perf_counter()
        out = fast_generate(model, ids, args.max_new_tokens, compile=mode == "compile",
                            static_cache=mode != "eager", attention=args.decode_attention)
        seconds = time.perf_counter() - start
        new = out[0, ids.shape[1]:]
        print(f"[generate] {len(new)} tokens in {seconds:.2f} s ({mode})")
        print(prompt + tokenizer.decode(new, skip_special_tokens=True), flush=True)
    return 0
