"""Fine-tune with pruning (APT) or a baseline, and measure accuracy, time, speed and memory."""
from __future__ import annotations

import argparse
from typing import Any

from lmprune.cli._common import add_command, overrides_from_flags
from lmprune.cli._device import add_device_argument
from lmprune.errors import LmpruneError

FLAGS = {"method": "train.method", "model": "model.name", "task": "train.task",
         "sparsity": "train.sparsity", "epochs": "train.epochs", "reference": "train.reference",
         "init_from": "train.init_from", "teacher": "train.teacher", "out": "output.dir",
         "device": "device", "mixed_precision": "train.mixed_precision",
         "gradient_checkpointing": "train.gradient_checkpointing"}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "train", help="fine-tune with pruning (APT) or a baseline and measure it",
        description="Fine-tune MODEL on TASK with METHOD (apt, ft, lora, lora-prune, "
                    "mask-tuning, cofi, lora-prune-distill), pruning SPARSITY of the "
                    "transformer body's parameters for the pruning methods. Writes the final "
                    "model (merged adapters, pruned structures removed, Hugging Face format), "
                    "DIR/metrics.json and DIR/report.md: dev/test metric, kept parameters, "
                    "training time, time-to-accuracy against --reference, inference throughput "
                    "and latency at batch 32/128, peak memory, and the training curve.",
        examples=["lmprune train --method apt --model minilm-l6 --task foods --sparsity 0.6 --out runs/apt",
                  "lmprune train --method ft --model minilm-l6 --task foods --out runs/ft",
                  "lmprune train --method apt --model minilm-l6 --task foods --reference runs/ft --out runs/apt2",
                  "lmprune train --method lora-prune --init-from runs/lora --sparsity 0.6 --out runs/lp",
                  "lmprune train --method cofi --teacher runs/ft --model minilm-l6 --out runs/cofi",
                  "lmprune train --method apt --model tiny-bert --out /tmp/x train.max_steps=20 apt.prune_start=5",
                  "lmprune train --config train-apt apt.kurtosis=false apt.rank_growth=static",
                  "lmprune train --method apt --model mpnet-base --task foods --num-gpus 2 --out runs/apt-dp",
                  "lmprune train --method ft --model mpnet-base --mixed-precision bf16 --out runs/ft-bf16",
                  "lmprune train --method apt --model FacebookAI/roberta-base --task sst2 --gradient-checkpointing --out runs/apt-gc",
                  "accelerate launch --num_processes 2 -m lmprune train --method apt --out runs/apt-dp"])
    parser.add_argument("--config", default="train-apt",
                        help="YAML config or shipped config name (default: train-apt)")
    parser.add_argument("--method", help="apt, ft, lora, lora-prune, mask-tuning, cofi or "
                                         "lora-prune-distill")
    parser.add_argument("--model", help="model alias, hub id or local directory")
    parser.add_argument("--task", help="dataset: foods (offline), sst2, mnli, ..., squad_v2, "
                                       "cnn_dailymail")
    parser.add_argument("--sparsity", type=float, help="fraction of body parameters to remove")
    parser.add_argument("--epochs", type=float, help="training epochs")
    parser.add_argument("--reference", help="run directory or number for time-to-accuracy")
    parser.add_argument("--init-from", dest="init_from",
                        help="reuse a fine-tuned run (lora-prune*: lora run; mask-tuning: ft run)")
    parser.add_argument("--teacher", help="dense fine-tuned run used as teacher (cofi)")
    parser.add_argument("--out", help="output directory")
    parser.add_argument("--mixed-precision", dest="mixed_precision", choices=["no", "bf16"],
                        help="training forwards under bfloat16 autocast (bf16) or not (no, "
                             "the default); compare methods at the same precision")
    parser.add_argument("--gradient-checkpointing", dest="gradient_checkpointing",
                        action="store_const", const="true",
                        help="recompute each layer's activations in backward instead of keeping "
                             "them: the same losses, less activation memory, about one more "
                             "forward per step (not for MPNet); compare methods with the same")
    add_device_argument(parser)
    parser.add_argument("--num-gpus", type=int, metavar="N", dest="num_gpus",
                        help="train data parallel on N GPUs: runs `accelerate launch "
                             "--num_processes N -m lmprune train ...` (apt, ft, lora); "
                             "train.batch_size stays the global batch, split over the GPUs. "
                             "With --device cpu: N CPU processes (gloo)")
    parser.add_argument("overrides", metavar="key=value", nargs="*",
                        help="any config field, e.g. apt.schedule=late train.lr=1e-3")
    return parser


def run(args: argparse.Namespace) -> int:
    from lmprune.cli._launch import launched, relaunch
    from lmprune.config import load_config
    from lmprune.recipes.train import run_train

    if args.num_gpus is not None and args.num_gpus < 1:
        raise LmpruneError(f"--num-gpus must be >= 1, got {args.num_gpus}")
    run_config = load_config(args.config, overrides_from_flags(args, FLAGS))
    if (args.num_gpus or 1) > 1 and not launched():
        from lmprune.recipes.train import check_data_parallel

        check_data_parallel(run_config)  # before any process starts
        return relaunch(args.argv, args.num_gpus, run_config.device)
    outcome = run_train(run_config)
    if outcome.metrics is None:  # a process other than the first: process 0 reports
        return 0
    m = outcome.metrics
    tta = (m.get("time_to_accuracy") or {}).get("seconds")
    print(f"{m['method']}: dev {m['metric_name']} {m['metric']:.4f}, kept "
          f"{m['kept_params_ratio']:.1%} of the body, trained {m['train_seconds']:.1f} s"
          + (f", 97% of reference after {tta:.1f} s" if tta is not None else "")
          + f"; report: {outcome.out_dir / 'report.md'}")
    return 0
