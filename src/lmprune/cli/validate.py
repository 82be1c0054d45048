"""Check a config (+ key=value overrides) and print it fully resolved."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lmprune.cli._common import add_command, add_config_arguments, load_config_from_args


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "validate", help="check a config (+ overrides) and print it resolved",
        description="Load a run config exactly as `lmprune prune`, `train`, `recover` and "
                    "`eval` do: read the YAML, apply the key=value overrides, check every field "
                    "and every name a run would reject (model, datasets, zero-shot tasks, "
                    "reference runs). Prints `ok: CONFIG` and the resolved config (all "
                    "defaults filled in), or every problem at once (exit code 2).",
        examples=["lmprune validate demo",
                  "lmprune validate my.yaml prune.sparsity=0.5 prune.structures=[heads]",
                  "lmprune validate demo --comments        # explain every field",
                  "lmprune validate demo -q -o resolved.yaml"])
    add_config_arguments(parser)
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print only the ok line (or the problems)")
    parser.add_argument("--comments", action="store_true",
                        help="write each field's help as a comment above it")
    parser.add_argument("-o", "--output", metavar="PATH",
                        help="also write the resolved config to PATH")
    return parser


def run(args: argparse.Namespace) -> int:
    from lmprune.config import dump_yaml, dumps_yaml, resolve_config

    from lmprune.recipes.preflight import name_problems, raise_problems

    if args.output:
        from lmprune.outputs import check_output_file

        check_output_file(args.output, "-o")
    cfg = load_config_from_args(args)
    raise_problems(name_problems(cfg))
    where = resolve_config(args.config)
    shown = args.config if Path(args.config) == where else f"{args.config} ({where})"
    print(f"ok: {shown}")
    if not args.quiet:
        print(dumps_yaml(cfg, comments=args.comments), end="")
    if args.output:
        dump_yaml(cfg, args.output, comments=args.comments)
    return 0
