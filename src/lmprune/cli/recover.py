"""Recover a pruned causal LM with LoRA on instruction data, merge, and save it.

LLM-Pruner's recovery recipe (defaults in the config's ``recovery`` section): rank-8 LoRA on
all seven projections, Alpaca prompt, loss on the response tokens only, AdamW with linear
warmup and decay. The adapters are merged into the weights, so the output directory loads
exactly like the input (stock or remote-code format).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lmprune.cli._common import add_command
from lmprune.cli._device import add_device_argument, add_placement_argument, device_overrides
from lmprune.errors import LmpruneError

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json",
                    "vocab.txt", "spiece.model")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "recover", help="fine-tune a pruned model with LoRA, merge and save it",
        description="Fine-tune a (pruned) causal LM with LoRA adapters on Alpaca-format "
                    "instruction data (LLM-Pruner's recovery recipe), merge the adapters into "
                    "the weights and save the result where it loads like the input. Writes "
                    "OUT/recovery.json (settings, loss curve, time, parameters trained) and "
                    "OUT/loss_curve.png; checkpoints go to OUT/checkpoints every "
                    "--checkpoint-every steps, and --resume continues from the newest one. "
                    "Run several GPUs data parallel with `accelerate launch -m lmprune recover "
                    "...`, or spread a model larger than one GPU over them with --placement "
                    "spread (one process).",
        examples=["lmprune recover --model runs/pruned --out runs/recovered",
                  "lmprune recover --model runs/pruned --data alpaca --out runs/rec "
                  "recovery.epochs=2 recovery.batch_size=64 --micro-batch 4",
                  "lmprune recover --model runs/pruned --data my_instructions.jsonl --out runs/rec",
                  "lmprune recover --model runs/pruned --out runs/rec --resume",
                  "lmprune recover --model tiny-llama --out runs/smoke recovery.max_steps=3",
                  "lmprune recover --model runs/big-pruned --placement spread --out runs/big-rec"])
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="the model to recover: a directory saved by lmprune (or any Hugging "
                             "Face causal-LM directory), or a model alias")
    parser.add_argument("--out", metavar="DIR", help="output directory (default: output.dir)")
    parser.add_argument("--data", metavar="D",
                        help="instruction data: a dataset name (alpaca; offline: chat-pairs) or "
                             "a local csv/json/jsonl/parquet file with instruction/input/output "
                             "columns (default: recovery.data)")
    parser.add_argument("--config", metavar="FILE",
                        help="a YAML config or shipped config name (default: built-in defaults)")
    parser.add_argument("overrides", metavar="key=value", nargs="*",
                        help="config overrides, e.g. recovery.max_steps=100 recovery.lr=2e-4")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint in OUT/checkpoints")
    parser.add_argument("--tokenizer", metavar="DIR",
                        help="load the tokenizer from DIR (default: the model directory)")
    parser.add_argument("--micro-batch", type=int, metavar="N",
                        help="examples per forward pass; gradients accumulate up to "
                             "recovery.batch_size (default 4, LLM-Pruner's)")
    parser.add_argument("--warmup-steps", type=int, metavar="N",
                        help="linear warmup steps, capped at 10%% of all steps (default 100)")
    parser.add_argument("--checkpoint-every", type=int, metavar="N",
                        help="write a checkpoint every N steps (default 200)")
    parser.add_argument("--template", choices=("alpaca", "plain"),
                        help="prompt format: alpaca (default) or plain (LLM-Pruner's "
                             "--no_instruction)")
    parser.add_argument("--train-on-inputs", action="store_true", default=None,
                        help="also train on the prompt tokens (default: response only)")
    parser.add_argument("--max-samples", type=int, metavar="N",
                        help="train on a seeded random subset of N examples")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_argument(parser)
    add_placement_argument(parser)
    return parser


def _load_config(args: argparse.Namespace):
    from lmprune.config import load_config

    overrides = device_overrides(args) + list(args.overrides or [])
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise LmpruneError(f"expected key=value overrides, got {bad[0]!r} (the config file goes "
                           "after --config)")
    if args.data:
        overrides.append(f"recovery.data={args.data}")
    return load_config(args.config, overrides)


def _load_model(name: str, tokenizer_dir: str | None, dtype):
    """(model, tokenizer, plan or None) from a directory or an alias, in ``dtype``."""
    from lmprune.structures.export import load_pretrained
    from lmprune.structures.plan import PLAN_FILE, PruningPlan
    from lmprune.zoo.registry import is_alias

    path = Path(name)
    if not path.is_dir():
        if is_alias(name):
            from lmprune.zoo import load_model

            loaded = load_model(name, "causal-lm", dtype=dtype)
            tokenizer = _tokenizer(tokenizer_dir) if tokenizer_dir else loaded.tokenizer
            return loaded.model, tokenizer, None
        raise LmpruneError(f"--model {name}: no such directory (nor a model alias from "
                           "`lmprune ls models`); give the directory a pruned model was saved to")
    if not (path / "config.json").exists():
        raise LmpruneError(f"--model {name}: not a saved model directory (no config.json)")
    model = load_pretrained(path, auto_class="AutoModelForCausalLM", dtype=dtype)
    plan = PruningPlan.load(path) if (path / PLAN_FILE).exists() else None
    return model, _tokenizer(tokenizer_dir or str(path)), plan


def _tokenizer(directory: str):
    from transformers import AutoTokenizer

    if not any((Path(directory) / f).exists() for f in _TOKENIZER_FILES):
        raise LmpruneError(f"no tokenizer in {directory}; pass --tokenizer DIR (e.g. the "
                           "directory of the model before pruning)")
    return AutoTokenizer.from_pretrained(directory)


def _check_before_loading(args: argparse.Namespace, cfg, out: Path, is_main: bool) -> None:
    """The output folder, the data and the model's name, checked before the model loads."""
    from lmprune.outputs import remove_stale_stages, stale_stage_note
    from lmprune.recipes.preflight import collect, instruction_data, model, raise_problems
    from lmprune.recovery.outputs import check_output

    checkpoint = check_output(out, resume=args.resume, overwrite=cfg.output.overwrite)
    stale = remove_stale_stages(out) if is_main else []
    if stale:
        print(f"[recover] {stale_stage_note(stale)}", flush=True)
    field = "--data" if args.data else "recovery.data"
    raise_problems(collect(model(args.model, "--model"), instruction_data(cfg.recovery.data,
                                                                          field)))
    if not is_main:
        return
    if args.resume and checkpoint is None:
        print(f"[recover] --resume: no checkpoint in {out / 'checkpoints'}, starting from "
              "scratch", flush=True)
    elif checkpoint is not None:
        print(f"[recover] resuming from {checkpoint}", flush=True)


def run(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from lmprune.device import accelerator_kwargs, announce, resolve_dtype
    from lmprune.placement import place, resolve_placement
    from lmprune.recovery import recover

    cfg = _load_config(args)
    out = Path(args.out or cfg.output.dir)
    placement = resolve_placement(cfg.device, cfg.placement)
    # the frozen base may be bfloat16 on a GPU: peft keeps the LoRA weights in float32
    dtype = resolve_dtype(cfg.model.dtype, placement.main, "inference")
    # one process, or one of several under `accelerate launch`
    state = PartialState(**accelerator_kwargs(cfg.device))
    if placement.spread and state.num_processes > 1:
        raise LmpruneError("placement spread already uses every GPU it names from one process; "
                           "run `lmprune recover` without `accelerate launch` (or drop "
                           "--placement spread for data parallelism)")
    _check_before_loading(args, cfg, out, state.is_main_process)
    model, tokenizer, plan = _load_model(args.model, args.tokenizer, dtype)
    if tokenizer is None:
        raise LmpruneError(f"{args.model} comes without a tokenizer; pass --tokenizer DIR")
    if placement.spread:  # else accelerate puts the model on this process's device
        place(model, placement)
    if state.is_main_process:
        announce("recover", placement if placement.spread else state.device, dtype)
        print(f"[recover] {args.model}: LoRA r={cfg.recovery.r} on "
              f"{', '.join(cfg.recovery.targets)}; data {cfg.recovery.data}; -> {out}", flush=True)
    result = recover(model, tokenizer, cfg, out, resume=args.resume, plan=plan,
                     source=str(args.model), micro_batch=args.micro_batch,
                     warmup_steps=args.warmup_steps, checkpoint_every=args.checkpoint_every,
                     train_on_inputs=args.train_on_inputs, template=args.template,
                     max_samples=args.max_samples, progress=not args.no_progress)
    if state.num_processes > 1:
        state.destroy_process_group()
    if not state.is_main_process:
        return 0
    losses = result.losses
    first, last = (f"{losses[0]:.4f}", f"{losses[-1]:.4f}") if losses else ("-", "-")
    resumed = f" (resumed at step {result.resumed_from})" if result.resumed_from is not None else ""
    print(f"[recover] {result.steps} steps{resumed}, loss {first} -> {last}, "
          f"{result.trainable_params:,} LoRA parameters trained "
          f"({result.report['params']['fraction']:.2%} of {result.total_params:,}), "
          f"{result.seconds:.1f}s")
    print(f"[recover] saved {result.save_format} model to {result.out_dir} "
          f"(recovery.json, loss_curve.png)")
    return 0
