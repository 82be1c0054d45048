"""Copy a saved model to a new directory, optionally in another format (e.g. DeciLM for vLLM)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lmprune.cli._common import add_command
from lmprune.errors import LmpruneError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from lmprune.structures.decilm import FORMATS

    parser = add_command(
        subparsers, "cp", help="copy a saved model, optionally converting its format",
        description="Load SRC (a directory saved by lmprune, any Hugging Face directory, or a "
                    "model alias) and save it to DST. --format auto (default) writes stock "
                    "transformers files when the config can express the model, else lmprune's "
                    "remote-code format; --format decilm writes the Nemotron-NAS / DeciLM "
                    "per-layer format that vLLM and llama.cpp serve, or says exactly why the "
                    "model does not fit it. DST is written atomically.",
        examples=["lmprune cp runs/ri/model runs/ri-decilm --format decilm",
                  "vllm serve runs/ri-decilm --trust-remote-code",
                  "lmprune cp runs/taylor/model /tmp/copy"])
    parser.add_argument("src", metavar="SRC", help="saved model directory or model alias")
    parser.add_argument("dst", metavar="DST", help="directory to write (must be empty or new)")
    parser.add_argument("--format", choices=FORMATS, default="auto",
                        help="auto (default) or decilm")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty DST")
    return parser


def run(args: argparse.Namespace) -> int:
    from lmprune.cli.eval import load_any
    from lmprune.structures.decilm import save_decilm
    from lmprune.structures.export import save_pretrained
    from lmprune.structures.plan import PLAN_FILE, PruningPlan

    dst = Path(args.dst)
    if dst.exists() and any(dst.iterdir()) and not args.overwrite:
        raise LmpruneError(f"{dst} exists and is not empty; choose another DST or --overwrite")
    model, tokenizer = load_any(args.src)
    src = Path(args.src)
    plan = PruningPlan.load(src) if (src / PLAN_FILE).exists() else None
    save = save_decilm if args.format == "decilm" else save_pretrained
    saved = save(model, dst, tokenizer=tokenizer, plan=plan, overwrite=args.overwrite)
    print(f"saved {args.src} to {saved.path} ({saved.format} format); load with: "
          f"{saved.load_hint}")
    for note in saved.notes:
        print(f"note: {note}")
    return 0
