"""The recovery training loop: AdamW, linear warmup/decay, gradient accumulation, on accelerate.

Choices (LLM-Pruner trains with ``transformers.Trainer``'s defaults; we keep them explicitly):

* AdamW (betas 0.9/0.999, eps 1e-8), no weight decay, gradients clipped to norm 1.0;
* learning rate at step ``s`` (0-based) of ``T``: ``lr * (s + 1) / W`` during the ``W`` warmup
  steps, then ``lr * (T - s) / (T - W)`` (linear decay; the last step still learns).
  ``W = min(warmup_steps, T // 10)``: LLM-Pruner's 100 warmup steps are ~6% of its ~1,600
  steps on Alpaca, and the cap keeps short runs from spending all their steps warming up;
* one optimizer step = ``batch_size`` examples; a step is split into micro-batches of
  ``micro_batch`` examples whose gradients accumulate. The loss is the *sum* of token losses
  divided by the number of target tokens of the whole step, so the gradient does not depend on
  how the step is split into micro-batches or processes (with dropout 0 they agree exactly);
* the data order is a seeded permutation per epoch, a pure function of (seed, epoch), so a
  resumed run sees exactly the batches an uninterrupted run would;
* several processes (``accelerate launch``): micro-batches are dealt out round-robin and
  gradients are synchronized once per step (``no_sync`` for the others).
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lmprune.errors import LmpruneError
from lmprune.recovery.instruct_data import IGNORE_INDEX, Example, collate

MAX_GRAD_NORM = 1.0  # transformers.Trainer's default, which LLM-Pruner uses
WEIGHT_DECAY = 0.0  # likewise
WARMUP_FRACTION_CAP = 0.1

# Defaults of settings not (yet) in RecoveryConfig; a config field of the same name wins.
EXTRA_DEFAULTS = {"micro_batch": 4, "warmup_steps": 100, "checkpoint_every": 200,
                  "train_on_inputs": False, "template": "alpaca", "max_samples": None}


@dataclass
class TrainSettings:
    """Everything the loop needs to know; ``to_dict()`` is what checkpoints must agree on."""

    lr: float
    epochs: float
    batch_size: int
    micro_batch: int
    max_steps: int | None
    warmup_steps: int
    checkpoint_every: int
    seed: int

    @classmethod
    def from_config(cls, recovery: Any, seed: int, **overrides: Any) -> TrainSettings:
        """From ``run.recovery`` (+ ``EXTRA_DEFAULTS`` for fields it lacks), then overrides."""
        values = {name: getattr(recovery, name) for name in ("lr", "epochs", "batch_size",
                                                              "max_steps")}
        for name in ("micro_batch", "warmup_steps", "checkpoint_every"):
            values[name] = getattr(recovery, name, EXTRA_DEFAULTS[name])
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(seed=seed, **values)
        settings.micro_batch = min(settings.micro_batch, settings.batch_size)
        settings.check()
        return settings

    def check(self) -> None:
        bad = [f"{n} must be a positive integer, got {getattr(self, n)}"
               for n in ("batch_size", "micro_batch", "checkpoint_every")
               if getattr(self, n) < 1]
        if self.warmup_steps < 0:
            bad.append(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.max_steps is not None and self.max_steps < 1:
            bad.append(f"recovery.max_steps must be a positive integer or null, "
                       f"got {self.max_steps}")
        if bad:
            raise LmpruneError("invalid recovery settings: " + "; ".join(bad))

    def steps_per_epoch(self, n_examples: int) -> int:
        return math.ceil(n_examples / self.batch_size)

    def total_steps(self, n_examples: int) -> int:
        """``max_steps`` if set (cycling through epochs as needed), else ``ceil(epochs * S)``."""
        if self.max_steps is not None:
            return self.max_steps
        return max(1, math.ceil(self.epochs * self.steps_per_epoch(n_examples)))

    def warmup(self, total: int) -> int:
        return min(self.warmup_steps, int(total * WARMUP_FRACTION_CAP))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainState:
    """Progress of a run: what checkpoints store and ``recovery.json`` reports."""

    step: int = 0
    losses: list[float] = field(default_factory=list)  # mean target-token loss per step
    lrs: list[float] = field(default_factory=list)
    tokens: int = 0  # target tokens trained on
    seconds: float = 0.0  # training time, summed over resumed sessions


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Multiplier of the peak learning rate at 0-based ``step`` (see the module docstring)."""
    if step < warmup:
        return (step + 1) / warmup
    return (total - step) / max(1, total - warmup)


def batch_indices(step: int, n_examples: int, batch_size: int, seed: int) -> list[int]:
    """The examples of optimizer step ``step``: a slice of epoch ``step // S``'s permutation."""
    per_epoch = math.ceil(n_examples / batch_size)
    epoch, j = divmod(step, per_epoch)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n_examples, generator=generator)
    return order[j * batch_size:(j + 1) * batch_size].tolist()


def token_loss_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token cross-entropy over the target tokens of ``batch`` (fp32)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   use_cache=False).logits
    logits, labels = logits[:, :-1].float(), batch["labels"][:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _step(model, optimizer, accelerator, batch: Sequence[Example], micro_batch: int,
          pad_id: int, params: list[torch.nn.Parameter]) -> tuple[float, int]:
    """One optimizer step over ``batch``; returns (mean target-token loss, target tokens)."""
    n_tokens = sum(e.num_targets for e in batch)
    world, rank = accelerator.num_processes, accelerator.process_index
    chunks = [batch[i:i + micro_batch] for i in range(0, len(batch), micro_batch)]
    mine = chunks[rank::world]
    slots = math.ceil(len(chunks) / world)  # equal on every process: DDP needs the same calls
    local = torch.zeros((), device=accelerator.device)
    for k in range(slots):
        # a process without a chunk left runs one with weight 0 so that every process joins
        # the final gradient synchronization
        chunk, weight = (mine[k], 1.0) if k < len(mine) else (chunks[0], 0.0)
        inputs = {key: t.to(accelerator.device) for key, t in collate(chunk, pad_id).items()}
        sync = contextlib.nullcontext() if k == slots - 1 else accelerator.no_sync(model)
        with sync:
            with accelerator.autocast():
                loss_sum = token_loss_sum(model, inputs)
            # DDP averages gradients over processes; scaling by `world` turns that into a sum
            accelerator.backward(loss_sum * (weight * world / n_tokens))
        local += loss_sum.detach() * weight
    accelerator.clip_grad_norm_(params, MAX_GRAD_NORM)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    total = accelerator.reduce(local, reduction="sum")
    return float(total) / n_tokens, n_tokens


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, accelerator: Any,
          examples: Sequence[Example], settings: TrainSettings, pad_id: int, state: TrainState,
          on_step: Callable[[TrainState, int], None] | None = None,
          progress: bool = True) -> TrainState:
    """Train from ``state.step`` to the last step; ``on_step(state, total)`` after each step."""
    total = settings.total_steps(len(examples))
    warmup = settings.warmup(total)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    bar = tqdm(total=total, initial=state.step, desc="recovery", unit="step", dynamic_ncols=True,
               disable=not (progress and accelerator.is_main_process))
    try:
        while state.step < total:
            start = time.perf_counter()
            lr = settings.lr * lr_factor(state.step, total, warmup)
            _set_lr(optimizer, lr)
            idx = batch_indices(state.step, len(examples), settings.batch_size, settings.seed)
            loss, n_tokens = _step(model, optimizer, accelerator, [examples[i] for i in idx],
                                   settings.micro_batch, pad_id, params)
            state.step += 1
            state.losses.append(loss)
            state.lrs.append(lr)
            state.tokens += n_tokens
            state.seconds += time.perf_counter() - start
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
            if on_step is not None:
                on_step(state, total)
    finally:
        bar.close()
        model.eval()
    return state
