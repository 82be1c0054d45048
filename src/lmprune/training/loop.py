"""The fine-tuning loop of ``lmprune train``: AdamW, linear warm-up/decay, step hooks, a clock.

Choices:

* AdamW (betas 0.9/0.999), gradients clipped to norm 1.0, learning rate ``lr * (s+1)/W`` during
  the ``W`` warm-up steps, then linear decay to 0 (BERT/RoBERTa fine-tuning, APT, CoFi). A
  parameter group may opt out: ``"constant_lr": True`` keeps its rate, ``"clip": False``
  leaves its gradients out of the clipping (CoFi's gates and Lagrange multipliers have their
  own optimizers with constant rates and no clipping in CoFi's trainer; groups of one AdamW
  update exactly as separate AdamWs would);
* a method may restart the schedule (``TrainMethod.schedule_restarts``): at those steps the
  optimizer starts afresh and the warm-up/decay runs again over the remaining steps (CoFi
  re-creates its optimizer and scheduler when pruning starts);
* the data order is a seeded permutation per epoch, a pure function of (seed, epoch);
* the **clock** counts training only: dev evaluations (the points of the training curve) pause
  it, so time-to-accuracy measures the method, not how often we looked;
* every evaluation interval also records what its steps cost (``LoopResult.costs``): seconds
  per step, memory (GPU peak of the interval, reset after each; CPU: resident set) and the
  MB of tensors held between steps, so a run that shrinks while it trains shows it;
* a method that changes its trainable tensors (APT's rank growth) returns True from
  ``after_step``; the optimizer is then rebuilt and the AdamW state of every tensor that is
  still trained is carried over (new tensors start fresh, as in APT);
* with a checkpoint (``lmprune train``: ``DIR.partial``), the state after every evaluation is
  saved and a rerun resumes from it (:mod:`lmprune.training.checkpoint`);
* devices through accelerate (``Accelerator().device``, ``backward``, autocast);
* **data parallel** (``accelerate launch``, ``lmprune train --num-gpus N``): every process draws
  the same global batch and runs its row shard with a weighted loss; after backward the
  gradients of every trained tensor (the model's, and the method's own: APT's masks)
  are all-reduced through accelerate and averaged, so every process takes the same optimizer
  step and the same decisions as one process would
  (:class:`~lmprune.training.distributed.DataParallel`). An all-reduce of the gradients rather
  than a DDP wrapper: APT compacts the model and grows adapter ranks mid-run, and this way
  nothing has to be re-wrapped. Only process 0 writes checkpoints.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from lmprune.device import attention_for_varied_shapes
from lmprune.recovery.loop import batch_indices  # the same seeded per-epoch order
from lmprune.training.method import TrainMethod
from lmprune.training.recompute import disable_recompute, enable_recompute

MAX_GRAD_NORM = 1.0


class Clock:
    """Wall time of training, pausable (``with clock.paused():``)."""

    def __init__(self) -> None:
        self._start: float | None = None
        self.elapsed = 0.0

    def start(self) -> None:
        if self._start is None:
            self._start = time.perf_counter()

    def stop(self) -> None:
        if self._start is not None:
            self.elapsed += time.perf_counter() - self._start
            self._start = None

    @property
    def seconds(self) -> float:
        extra = 0.0 if self._start is None else time.perf_counter() - self._start
        return self.elapsed + extra

    class _Paused:
        def __init__(self, clock: Clock) -> None:
            self.clock, self.was_running = clock, False

        def __enter__(self):
            self.was_running = self.clock._start is not None
            self.clock.stop()

        def __exit__(self, *exc):
            if self.was_running:
                self.clock.start()

    def paused(self) -> Clock._Paused:
        return Clock._Paused(self)


@dataclass
class LoopSettings:
    """One training phase: how many steps, the batch and the optimisation."""

    total_steps: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    warmup_steps: int = 0
    eval_every: int = 50
    seed: int = 0
    phase: str = "train"
    progress: bool = True
    #: "bf16": forwards under bfloat16 autocast; "no": whatever accelerate's own config says
    mixed_precision: str = "no"
    #: recompute each layer's activations in backward (lmprune.training.recompute)
    gradient_checkpointing: bool = False


#: ``train.mixed_precision`` values that run the forwards under torch's autocast, and its dtype
AUTOCAST_DTYPES = {"bf16": torch.bfloat16}


def _autocast(accelerator, device: torch.device, precision: str):
    """bfloat16 autocast for ``bf16`` (torch's own: accelerate's precision is fixed once per
    process, and runs of one process, e.g. an ablation, may differ); else accelerate's.

    Without autocast's cache of cast weights: the cache is keyed by the parameter object, and
    APT's shared teacher swaps other tensors into the same parameters for its forward, so the
    student's forward after it would reuse the teacher's casts (wrong values, no gradient to
    the adapters, or a shape error once ranks grew; found on mpnet-base)."""
    if precision in AUTOCAST_DTYPES:
        return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision], cache_enabled=False)
    return accelerator.autocast()


def steps_for(n_examples: int, batch_size: int, epochs: float, max_steps: int | None) -> int:
    """Optimizer steps of ``epochs`` over ``n_examples`` (capped by ``max_steps``), >= 1."""
    per_epoch = math.ceil(n_examples / batch_size)
    steps = max(1, math.ceil(per_epoch * epochs))
    return min(steps, max_steps) if max_steps else steps


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Multiplier of the peak learning rate at 0-based ``step``: linear warm-up, linear decay."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


@dataclass
class LoopResult:
    steps: int = 0
    losses: list[float] = field(default_factory=list)
    rebuilds: int = 0
    #: one point per evaluation interval: what the interval's steps cost (see ``_cost_point``)
    costs: list[dict] = field(default_factory=list)


def _cost_point(step: int, steps: int, seconds: float, model, optimizer, method,
                device) -> dict:
    """The cost of the ``steps`` steps before ``step``: mean training seconds per step,
    memory (:func:`lmprune.evaluation.memory.interval_peak`: the GPU peak of the interval, or
    the CPU process's resident set), the MB of tensors the run holds between steps (model,
    optimizer state, what the method keeps, e.g. APT's teacher) and the parameters."""
    from lmprune.evaluation.memory import interval_peak, tensor_bytes

    memory = interval_peak(device)
    params = list(model.parameters())
    optimized = [p for g in optimizer.param_groups for p in g["params"]]
    state = [v for s in optimizer.state.values() for v in s.values()]
    return {"step": step, "step_seconds": round(seconds / max(1, steps), 6),
            "memory_mb": round(memory.mb, 3), "memory_kind": memory.kind,
            "state_mb": round(tensor_bytes([*params, *optimized, *state,
                                            *method.held_tensors()]) / 2**20, 3),
            "params": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad)}


def build_optimizer(method: TrainMethod, model, lr: float, weight_decay: float,
                    previous: torch.optim.Optimizer | None = None,
                    moves=None) -> torch.optim.AdamW:
    """AdamW over the method's groups; the state of tensors ``previous`` trained is kept, and
    the state of tensors that ``moves`` (a compaction's
    :class:`~lmprune.structures.moves.ParamMoves`) says replaced them, cut the same way."""
    groups = method.parameter_groups(model, lr)
    for g in groups:
        g.setdefault("weight_decay", weight_decay)
        g["initial_lr"] = g.get("lr", lr)
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    if previous is not None:
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p in previous.state and all(
                        not torch.is_tensor(v) or v.dim() == 0 or v.shape == p.shape
                        for v in previous.state[p].values()):
                    optimizer.state[p] = previous.state[p]
        if moves is not None:
            moves.carry_optimizer_state(previous.state, optimizer)
    return optimizer


def data_parallel(accelerator: Any):
    """The processes of this run (:class:`~lmprune.training.distributed.DataParallel`)."""
    from lmprune.training.distributed import DataParallel

    if getattr(accelerator, "num_processes", 1) <= 1:
        return DataParallel(None)
    dp = getattr(accelerator, "_lmprune_data_parallel", None)  # one per run: the loop's shard
    if dp is None:  # state (idle) is read by the method's statistics
        dp = DataParallel(accelerator)
        accelerator._lmprune_data_parallel = dp
    return dp


def synced_tensors(model, optimizer, method: TrainMethod) -> list[torch.Tensor]:
    """Every tensor whose gradient the processes average, once each: the optimizer's, the
    model's trainable parameters and the method's own (:meth:`TrainMethod.grad_tensors`)."""
    seen, out = set(), []
    for t in [*(p for g in optimizer.param_groups for p in g["params"]),
              *(p for p in model.parameters() if p.requires_grad), *method.grad_tensors()]:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def run_loop(model, method: TrainMethod, features: list[dict], collate: Callable[[list], dict],
             settings: LoopSettings, accelerator: Any, clock: Clock,
             on_eval: Callable[[int], None] | None = None, checkpoint=None) -> LoopResult:
    """Train ``model`` for ``settings.total_steps`` steps; ``on_eval(step)`` every
    ``eval_every`` steps and after the last one (the clock is paused around it).

    ``checkpoint`` (optional, :class:`lmprune.training.context.PhaseCheckpoint`): after each
    evaluation the loop's state is saved through it; when it holds a saved state, training
    resumes from there (:mod:`lmprune.training.checkpoint`).

    On a GPU, attention runs without cuDNN's backend (batches padded to their longest example
    meet many shapes, and cuDNN plans each: :func:`lmprune.device.attention_for_varied_shapes`).
    """
    with attention_for_varied_shapes(accelerator.device):
        return _run_loop(model, method, features, collate, settings, accelerator, clock,
                         on_eval, checkpoint)


def _run_loop(model, method: TrainMethod, features: list[dict], collate, settings: LoopSettings,
              accelerator: Any, clock: Clock, on_eval, checkpoint) -> LoopResult:
    from lmprune.training.checkpoint import load_model_state, set_rng_state

    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:  # the method rebuilds its structure (compactions, ranks) first
        method.load_state_dict(model, saved["method"])
        load_model_state(model, saved["model"])
    optimizer = build_optimizer(method, model, settings.lr, settings.weight_decay)
    restarts = {s for s in method.schedule_restarts(settings.total_steps)
                if 0 < s < settings.total_steps}
    segment, first = 0, 0  # first step of the current learning-rate schedule, of this session
    result = LoopResult()
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        first = saved["step"]
        segment = max([r for r in restarts if r < first], default=0)
        result = LoopResult(first, list(saved["losses"]), saved["rebuilds"], list(saved["costs"]))
        set_rng_state(saved["rng"])
    device = accelerator.device
    dp = data_parallel(accelerator)
    if settings.gradient_checkpointing:
        enable_recompute(model)
    method.holds_forward = settings.gradient_checkpointing
    model.train()
    bar = tqdm(total=settings.total_steps, desc=settings.phase, unit="step", dynamic_ncols=True,
               disable=not settings.progress or not dp.is_main)
    interval = (first, clock.seconds)  # first step and clock time of the current interval
    if device.type == "cuda":
        from lmprune.evaluation.memory import interval_peak

        interval_peak(device)  # the first interval's peak starts here
    clock.start()
    try:
        bar.update(first)
        for step in range(first, settings.total_steps):
            if step in restarts:
                optimizer = build_optimizer(method, model, settings.lr, settings.weight_decay)
                segment = step
            factor = lr_factor(step - segment, settings.total_steps - segment,
                               settings.warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * (1.0 if group.get("constant_lr") else factor)
            idx = batch_indices(step, len(features), settings.batch_size, settings.seed)
            part, weight = dp.shard(collate([features[i] for i in idx]))
            batch = {k: v.to(device) for k, v in part.items()}
            try:  # hooks a recomputing forward kept open close after backward
                with _autocast(accelerator, device, settings.mixed_precision):
                    loss = method.loss(model, batch, step)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{settings.phase}: loss is {float(loss)} at step "
                                             f"{step}; lower the learning rate (train.lr)")
                accelerator.backward(loss * weight if dp.active else loss)
            finally:
                method.release_forward()
            if dp.active:
                dp.average_grads(synced_tensors(model, optimizer, method))
                loss = torch.tensor(dp.mean(loss.detach() * weight))
            method.after_backward(model, step)
            params = [p for g in optimizer.param_groups if g.get("clip", True) for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if method.after_step(model, step):
                optimizer = build_optimizer(method, model, settings.lr, settings.weight_decay,
                                            previous=optimizer, moves=method.take_moves())
                result.rebuilds += 1
            result.steps = step + 1
            result.losses.append(float(loss.detach()))
            loss = None  # its graph's hooks would keep this step's tensors through the next step
            bar.update(1)
            if not bar.disable:  # the kept share can be a read from the device: only if shown
                bar.set_postfix(loss=f"{result.losses[-1]:.4f}",
                                keep=f"{method.keep_ratio():.2f}")
            last = step + 1 == settings.total_steps
            if (step + 1) % settings.eval_every == 0 or last:
                with clock.paused():
                    result.costs.append(_cost_point(step + 1, step + 1 - interval[0],
                                                    clock.seconds - interval[1], model,
                                                    optimizer, method, device))
                    if on_eval is not None:
                        on_eval(step + 1)
                        model.train()
                    if checkpoint is not None and dp.is_main:
                        checkpoint.save(step + 1, model, optimizer, method, result)
                interval = (step + 1, clock.seconds)
    finally:
        clock.stop()
        bar.close()
        model.eval()
        method.holds_forward = False
        if settings.gradient_checkpointing:
            disable_recompute(model)
    return result
