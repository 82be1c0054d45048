"""Evaluate any dense or pruned model: perplexity, zero-shot accuracy, speed and memory."""
from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from lmprune.cli._common import add_command, print_table
from lmprune.cli._device import add_device_argument, add_placement_argument, device_overrides
from lmprune.errors import LmpruneError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "eval", help="evaluate a dense or pruned model",
        description="Perplexity (the protocol is written into the result), zero-shot accuracy "
                    "through lm-evaluation-harness on the in-memory model, and measured "
                    "generation throughput, latency and peak memory. Writes a JSON file.",
        examples=["lmprune eval --model runs/taylor/model --tasks wordnet-defs --out eval.json",
                  "lmprune eval --model smollm2-135m --tasks boolq,piqa --perplexity wikitext2 --out e.json",
                  "lmprune eval --model runs/ri/model --no-speed eval.seq_len=2048 --out e.json"])
    parser.add_argument("--model", required=True, help="a saved model directory, a model alias "
                        "or a hub id")
    parser.add_argument("--tasks", help="comma-separated lm-eval tasks (offline: wordnet-defs); "
                        "empty string for none")
    parser.add_argument("--perplexity", help="comma-separated text datasets (offline: austen)")
    parser.add_argument("--limit", type=int, help="examples per zero-shot task")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed measurement")
    parser.add_argument("--config", default="prune", help="config whose `eval` section is used "
                        "(default: the shipped `prune` config)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    add_device_argument(parser)
    add_placement_argument(parser)
    parser.add_argument("overrides", metavar="key=value", nargs="*", help="e.g. eval.seq_len=2048")
    return parser


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def load_any(name: str, device=None, dtype=None):
    """(model, tokenizer) from a saved directory (any lmprune format) or a zoo alias / hub id,
    on ``device`` (default: where it loads) in ``dtype`` (default: as saved / float32)."""
    from lmprune.zoo import load_model

    path = Path(name)
    if path.is_dir() and (path / "config.json").exists():
        from transformers import AutoTokenizer

        import lmprune

        options = {} if dtype is None else {"dtype": dtype}
        model, tokenizer = lmprune.load_pretrained(path, **options), None
        with contextlib.suppress(OSError, ValueError, TypeError):  # weights without a tokenizer
            tokenizer = AutoTokenizer.from_pretrained(path)
    else:
        loaded = load_model(name, "causal-lm", **({} if dtype is None else {"dtype": dtype}))
        model, tokenizer = loaded.model.eval(), loaded.tokenizer
    return (model if device is None else model.to(device)), tokenizer


def run(args: argparse.Namespace) -> int:
    from lmprune.config import load_config
    from lmprune.device import announce, resolve_dtype
    from lmprune.evaluation.suite import evaluate
    from lmprune.outputs import check_output_file
    from lmprune.recipes.preflight import check_eval
    from lmprune.reporting.report import flatten

    out = check_output_file(args.out)  # before the evaluation, not after it
    overrides = list(args.overrides or [])
    if args.tasks is not None:
        overrides.append(f"eval.zero_shot=[{','.join(_split(args.tasks))}]")
    if args.perplexity is not None:
        overrides.append(f"eval.perplexity=[{','.join(_split(args.perplexity))}]")
    if args.limit is not None:
        overrides.append(f"eval.limit={args.limit}")
    overrides.append(f"eval.speed={'false' if args.no_speed else 'true'}")
    run_config = load_config(args.config, device_overrides(args) + overrides)
    check_eval(run_config, args.model)
    from lmprune.placement import place, resolve_placement

    placement = resolve_placement(run_config.device, run_config.placement)
    dtype = resolve_dtype(run_config.model.dtype, placement.main, "inference")
    model, tokenizer = load_any(args.model, None, dtype)
    model = place(model, placement)
    if tokenizer is None:
        raise LmpruneError(f"{args.model} has no tokenizer; evaluation needs one (save the "
                           f"model with its tokenizer)")
    announce("eval", placement, dtype)
    result = evaluate(model, tokenizer, run_config.eval)
    result["model"] = args.model
    result["device"] = str(placement.main) if not placement.spread else placement.describe()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print_table([{"metric": k, "value": f"{v:.4g}" if isinstance(v, float) else v}
                 for k, v in flatten(result).items()], [("metric", "METRIC"), ("value", "VALUE")])
    print(f"written: {out}")
    return 0
