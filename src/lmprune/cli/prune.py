"""Prune a model after pretraining (taylor, adapruner, sublayer-ri, magnitude, ...)."""
from __future__ import annotations

import argparse
from typing import Any

from lmprune.cli._common import add_command, overrides_from_flags
from lmprune.cli._device import add_device_argument, add_placement_argument

FLAGS = {"method": "prune.method", "model": "model.name", "sparsity": "prune.sparsity",
         "calibration": "data.calibration", "out": "output.dir", "device": "device",
         "placement": "placement"}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "prune", help="prune a model after pretraining and report before/after",
        description="Score the model's structures on calibration data, remove the least "
                    "important ones, save the pruned model (Hugging Face format) with its plan, "
                    "and write DIR/metrics.json and DIR/report.md: parameters, perplexity, "
                    "zero-shot accuracy and measured generation speed before and after.",
        examples=["lmprune prune --method taylor --model smollm2-135m --sparsity 0.2 --out runs/taylor",
                  "lmprune prune --method sublayer-ri --model smollm2-135m --sparsity 0.2 --out runs/ri",
                  "lmprune prune --config my.yaml taylor.importance=element2 eval.max_windows=40",
                  "lmprune prune --method adapruner --model tiny-llama --out /tmp/x adapruner.trials=5",
                  "lmprune prune --method taylor --model DIR --placement spread --out runs/big  "
                  "# layers over every GPU"])
    parser.add_argument("--config", default="prune",
                        help="YAML config or shipped config name (default: prune)")
    parser.add_argument("--method", help="pruning method (`lmprune ls methods`)")
    parser.add_argument("--model", help="model alias, hub id or local directory")
    parser.add_argument("--sparsity", type=float, help="share of the non-embedding parameters to "
                        "remove, in [0, 1) (prune.budget=units: of the units of each kind)")
    parser.add_argument("--calibration", help="calibration text dataset (offline: austen)")
    parser.add_argument("--out", help="output directory")
    add_device_argument(parser)
    add_placement_argument(parser)
    parser.add_argument("overrides", metavar="key=value", nargs="*",
                        help="any config field, e.g. prune.structures=[heads,neurons]")
    return parser


def run(args: argparse.Namespace) -> int:
    from lmprune.config import load_config
    from lmprune.recipes.prune import run_prune

    run_config = load_config(args.config, overrides_from_flags(args, FLAGS))
    outcome = run_prune(run_config)
    removed = outcome.metrics["params_removed_fraction"]
    print(f"removed {removed['body']:.1%} of the non-embedding parameters "
          f"({removed['total']:.1%} of all); report: {outcome.out_dir / 'report.md'}")
    return 0
