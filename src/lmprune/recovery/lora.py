"""LoRA recovery of a pruned causal LM: ``recover(model, tokenizer, run, out_dir)``.

LLM-Pruner (Ma et al., NeurIPS 2023, Sec. 3.3, Eq. 9) recovers a pruned model by training a
low-rank update of every frozen projection, ``W x + (alpha / r) B A x`` (Hu et al., 2021),
on Alpaca-style instructions, then folding it back: ``W' = W + (alpha / r) B A``. The merged
model has the pruned model's shapes, so it saves and loads exactly like its input.

Adapters go on the ``nn.Linear`` modules whose last name is one of ``recovery.targets``; in a
pruned model a removed sublayer has no projections left, so only the modules that exist are
targeted (each target name must still match at least one module).
"""
from __future__ import annotations

import dataclasses
import hashlib
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmprune import __version__
from lmprune.device import accelerator_kwargs
from lmprune.errors import LmpruneError
from lmprune.recovery.checkpoint import load_checkpoint, save_checkpoint
from lmprune.recovery.instruct_data import (
    TEMPLATES,
    Example,
    build_examples,
    load_instruction_data,
    pad_token_id,
)
from lmprune.recovery.loop import EXTRA_DEFAULTS, WEIGHT_DECAY, TrainSettings, TrainState, train
from lmprune.recovery.outputs import prepare_output, publish
from lmprune.training.recompute import disable_recompute, enable_recompute, require_recompute


@dataclass
class RecoveryResult:
    """What :func:`recover` did. ``model`` is the merged model (the input, modified in place)."""

    out_dir: Path
    model: nn.Module
    steps: int
    losses: list[float]
    trainable_params: int
    total_params: int
    seconds: float
    save_format: str | None
    resumed_from: int | None = None
    report: dict[str, Any] = field(default_factory=dict)


def resolve_targets(model: nn.Module, names: list[str]) -> list[str]:
    """Full paths of the ``nn.Linear`` modules whose last name component is in ``names``.

    Raises :class:`LmpruneError` naming every target that matches nothing, with the linear
    layer names the model does have.
    """
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    by_suffix: dict[str, list[str]] = {}
    for path in linear:
        by_suffix.setdefault(path.rsplit(".", 1)[-1], []).append(path)
    missing = [n for n in names if n not in by_suffix]
    if missing or not names:
        what = (f"recovery.targets: {', '.join(repr(n) for n in missing)} matches no linear "
                "layer of this model" if missing else "recovery.targets is empty")
        raise LmpruneError(
            f"{what}; the model's linear layers are named "
            f"{', '.join(sorted(by_suffix)) or '(none)'}. Set recovery.targets to some of "
            "those, e.g. recovery.targets=[q_proj,v_proj]")
    return [path for path in linear if path.rsplit(".", 1)[-1] in names]


def add_lora(model: nn.Module, recovery: Any, targets: list[str] | None = None) -> nn.Module:
    """Wrap ``model`` in a peft LoRA model (``recovery``: ``RecoveryConfig``); base frozen.

    ``targets``: full module paths (default: :func:`resolve_targets` of ``recovery.targets``).
    """
    from peft import LoraConfig, get_peft_model

    targets = targets if targets is not None else resolve_targets(model, list(recovery.targets))
    config = LoraConfig(r=recovery.r, lora_alpha=recovery.alpha, lora_dropout=recovery.dropout,
                        target_modules=list(targets),
                        bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing",
                                category=FutureWarning)
        return get_peft_model(model, config)


def merge_lora(peft_model: nn.Module) -> nn.Module:
    """Fold the adapters into the base weights (``W + alpha/r B A``); returns the base model."""
    return peft_model.merge_and_unload()


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, all) parameter counts, shared tensors counted once."""
    seen = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in seen if p.requires_grad), sum(p.numel() for p in seen)


def _check_causal_lm(model: nn.Module) -> None:
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False) \
            or not type(model).__name__.endswith("ForCausalLM"):
        raise LmpruneError(f"recovery fine-tunes causal language models (LLaMA, Mistral, Qwen2 "
                           f"...ForCausalLM); got {type(model).__name__}. Load the model with "
                           "task causal-lm")


def _rows(data: Any, default_name: str, max_samples: int | None, seed: int) -> tuple[Any, str]:
    """The instruction rows and a name for the report."""
    if data is None or isinstance(data, (str, Path)):
        name = str(data if data is not None else default_name)
        rows = load_instruction_data(name)
    else:
        name, rows = "in-memory", data if hasattr(data, "column_names") else list(data)
    if not len(rows):
        raise LmpruneError(f"the instruction data {name!r} has no rows")
    if max_samples is not None and max_samples < len(rows):
        keep = sorted(random.Random(seed).sample(range(len(rows)), max_samples))
        rows = rows.select(keep) if hasattr(rows, "select") else [rows[i] for i in keep]
    return rows, name


def _data_fingerprint(examples: list[Example]) -> str:
    digest = hashlib.sha1()
    for e in examples:
        digest.update(repr((e.input_ids, e.labels)).encode())
    return digest.hexdigest()


def _option(recovery: Any, name: str, given: Any) -> Any:
    """An explicit argument, else the config field (once the schema has it), else the default."""
    return given if given is not None else getattr(recovery, name, EXTRA_DEFAULTS[name])


def recover(model: nn.Module, tokenizer: Any, run: Any, out_dir: str | Path, data: Any = None,
            resume: bool = False, *, plan: Any = None, source: str | None = None,
            micro_batch: int | None = None, warmup_steps: int | None = None,
            checkpoint_every: int | None = None, train_on_inputs: bool | None = None,
            template: str | None = None, max_samples: int | None = None,
            progress: bool = True) -> RecoveryResult:
    """Fine-tune ``model`` with LoRA on instruction data, merge, and save it to ``out_dir``.

    Args:
        model: a causal LM (pruned or dense); modified in place and returned merged.
        tokenizer: its tokenizer (saved beside the model).
        run: a ``RunConfig``; ``run.recovery`` holds the recipe, ``run.seed`` the seed,
            ``run.output.overwrite`` whether a non-empty ``out_dir`` may be replaced.
        out_dir: where the merged model, ``recovery.json``, ``loss_curve.png`` and
            ``checkpoints/`` go.
        data: None (``run.recovery.data``), a dataset name or local file, a
            ``datasets.Dataset`` or a list of mappings with instruction/input/output.
        resume: continue from the newest checkpoint in ``out_dir/checkpoints``.
        plan: the input's ``PruningPlan``, saved with the output (its meta records recovery).
        micro_batch, warmup_steps, checkpoint_every, train_on_inputs, template, max_samples:
            settings not in ``RecoveryConfig`` yet (see ``loop.EXTRA_DEFAULTS``).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    started = time.perf_counter()
    rc = run.recovery
    settings = TrainSettings.from_config(rc, run.seed, micro_batch=micro_batch,
                                         warmup_steps=warmup_steps,
                                         checkpoint_every=checkpoint_every)
    template = _option(rc, "template", template)
    if template not in TEMPLATES:
        raise LmpruneError(f"unknown prompt template {template!r}; templates: "
                           f"{', '.join(TEMPLATES)}")
    train_on_inputs = bool(_option(rc, "train_on_inputs", train_on_inputs))
    _check_causal_lm(model)
    recompute = bool(getattr(rc, "gradient_checkpointing", False))
    if recompute:
        require_recompute(model, "recovery.gradient_checkpointing")  # before the data is read
    targets = resolve_targets(model, list(rc.targets))
    rows, data_name = _rows(data, rc.data, _option(rc, "max_samples", max_samples), run.seed)
    examples, dropped = build_examples(tokenizer, rows, max_len=rc.max_len, template=template,
                                       train_on_inputs=train_on_inputs)
    accelerator = Accelerator(**accelerator_kwargs(getattr(run, "device", "auto")))
    out = Path(out_dir)
    checkpoint = prepare_output(out, resume=resume, overwrite=run.output.overwrite,
                                is_main=accelerator.is_main_process)
    accelerator.wait_for_everyone()

    set_seed(run.seed)  # LoRA's A matrices are drawn here; dropout draws later
    peft_model = add_lora(model, rc, targets)
    if recompute:
        enable_recompute(peft_model, "recovery.gradient_checkpointing")
    trainable, total = count_params(peft_model)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad],
                                  lr=settings.lr, weight_decay=WEIGHT_DECAY)
    peft_model, optimizer = accelerator.prepare(peft_model, optimizer)
    inner = accelerator.unwrap_model(peft_model)
    fingerprint = _fingerprint(rc, settings, trainable, examples, template, train_on_inputs)
    state, resumed_from = TrainState(), None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, inner, optimizer, fingerprint, accelerator)
        resumed_from = state.step

    def on_step(st: TrainState, total_steps: int) -> None:
        if st.step % settings.checkpoint_every == 0 or st.step == total_steps:
            save_checkpoint(out, inner, optimizer, st, fingerprint, accelerator)

    state = train(peft_model, optimizer, accelerator, examples, settings,
                  pad_token_id(tokenizer), state, on_step, progress)
    if recompute:
        disable_recompute(inner)
    merged = merge_lora(inner).eval()
    report = {"lmprune_version": __version__, "model": source, "data": data_name,
              "config": dataclasses.asdict(rc),
              **_settings_report(settings, template, train_on_inputs, len(examples)),
              "dropped_examples": dropped, "steps": state.step, "tokens_trained": state.tokens,
              "loss": state.losses, "lr": state.lrs,
              "params": {"trainable": trainable, "base": total - trainable,
                         "fraction": trainable / max(1, total - trainable)},
              "lora_modules": len(targets), "resumed_from": resumed_from,
              "train_seconds": state.seconds, "wall_seconds": time.perf_counter() - started,
              "num_processes": accelerator.num_processes, "device": str(accelerator.device),
              "mixed_precision": str(accelerator.mixed_precision)}
    saved = None
    if accelerator.is_main_process:
        saved = publish(out, merged, tokenizer, _plan_with_meta(plan, report), report)
    accelerator.wait_for_everyone()
    return RecoveryResult(out, merged, state.step, state.losses, trainable, total - trainable,
                          report["wall_seconds"], saved.format if saved else None, resumed_from,
                          report)


def _fingerprint(rc: Any, settings: TrainSettings, trainable: int, examples: list[Example],
                 template: str, train_on_inputs: bool) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed: schedule, adapters, data."""
    return {"settings": settings.to_dict(), "trainable_params": trainable,
            "lora": {"r": rc.r, "alpha": rc.alpha, "dropout": rc.dropout,
                     "targets": list(rc.targets)},
            "data": {"examples": len(examples), "max_len": rc.max_len, "template": template,
                     "train_on_inputs": train_on_inputs, "sha1": _data_fingerprint(examples)}}


def _settings_report(settings: TrainSettings, template: str, train_on_inputs: bool,
                     n_examples: int) -> dict[str, Any]:
    """The report's view of the resolved settings and of the schedule they imply."""
    total_steps = settings.total_steps(n_examples)
    return {"settings": {**settings.to_dict(), "template": template,
                         "train_on_inputs": train_on_inputs,
                         "warmup_steps_used": settings.warmup(total_steps)},
            "examples": n_examples, "total_steps": total_steps}


def _plan_with_meta(plan: Any, report: dict) -> Any:
    """A copy of ``plan`` whose meta records that the pruned model was recovered."""
    if plan is None:
        return None
    meta = {**plan.meta, "recovery": {"data": report["data"], "steps": report["steps"],
                                      "r": report["config"]["r"]}}
    return dataclasses.replace(plan, meta=meta)
