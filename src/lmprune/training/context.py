"""Everything one ``lmprune train`` run shares between its phases: data, clock, curve, device."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lmprune.recovery.loop import batch_indices
from lmprune.training.loop import Clock, LoopSettings, run_loop, steps_for
from lmprune.training.method import TrainMethod


@dataclass
class TrainContext:
    """A run in progress: config, task, encoded splits, accelerator, clock and training curve.

    ``curve`` points are ``{"step", "seconds", "metric", "keep_ratio", "phase"}``; ``seconds``
    is the training clock (evaluations excluded), ``step`` counts optimizer steps over all
    phases, ``keep_ratio`` is the fraction of the prunable body the evaluated model keeps.
    """

    config: Any  # RunConfig
    task: Any  # lmprune.tasks.Task
    tokenizer: Any
    train: Any  # EncodedSplit
    dev: Any  # EncodedSplit
    accelerator: Any
    family: str
    clock: Clock = field(default_factory=Clock)
    curve: list[dict] = field(default_factory=list)
    steps_done: int = 0
    phases: list[dict] = field(default_factory=list)
    #: what each evaluation interval cost (``LoopResult.costs`` with ``step`` counted over all
    #: phases and the phase's name), and the steps of pruning events / compactions
    costs: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    extra_seconds: float = 0.0  # training time of the runs this one builds on (upstream)
    dense_body: int | None = None  # body parameters of the model before training
    #: called after each dev evaluation of a phase with (model, method, phase step, phase
    #: steps): lora-prune's probes prune the current model there (training.baselines)
    probe: Callable[[nn.Module, TrainMethod, int, int], None] | None = None
    #: where phases save their state after every evaluation and resume from (None: nowhere)
    checkpoints: Any = None  # lmprune.training.checkpoint.TrainCheckpoints
    phase_index: int = 0
    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def seconds(self) -> float:
        return self.clock.seconds + self.extra_seconds

    def evaluate(self, model: nn.Module, method: TrainMethod | None = None,
                 phase: str = "train") -> dict:
        """Dev metrics of the model as the method currently computes it; adds a curve point."""
        cfg = self.config.train
        with self.clock.paused():
            if method is not None:
                with method.active(model):
                    metrics = self.task.evaluate(model, self.dev, cfg.eval_batch_size, self.device)
                keep = method.keep_ratio()
            else:
                metrics = self.task.evaluate(model, self.dev, cfg.eval_batch_size, self.device)
                keep = 1.0
        if method is not None:
            method.on_evaluate(model, float(metrics[self.task.metric]), self.steps_done)
        point = {"step": self.steps_done, "seconds": round(self.seconds, 3),
                 "metric": float(metrics[self.task.metric]), "keep_ratio": round(keep, 4),
                 "phase": phase}
        self.curve.append(point)
        return metrics

    def settings(self, epochs: float, phase: str, lr: float | None = None) -> LoopSettings:
        cfg = self.config.train
        total = steps_for(len(self.train), cfg.batch_size, epochs, cfg.max_steps)
        lr = lr if lr is not None else cfg.learning_rate(self.config.apt.adapter, self.config.apt.backbone_lr)
        return LoopSettings(total_steps=total, batch_size=cfg.batch_size, lr=lr,
                            weight_decay=cfg.weight_decay,
                            warmup_steps=int(cfg.warmup_ratio * total),
                            eval_every=cfg.eval_every, seed=self.config.seed, phase=phase,
                            progress=cfg.progress, mixed_precision=cfg.mixed_precision,
                            gradient_checkpointing=cfg.gradient_checkpointing)

    def steps_per_epoch(self) -> int:
        return steps_for(len(self.train), self.config.train.batch_size, 1.0, None)

    def run_phase(self, model: nn.Module, method: TrainMethod, settings: LoopSettings,
                  keep_override: float | None = None) -> nn.Module:
        """Set the method up, train one phase with curve points, return the trained model."""
        model = method.setup(model, self)
        model.to(self.device)
        start = self.steps_done

        def on_eval(step: int) -> None:
            self.steps_done = start + step
            self.evaluate(model, method, phase=settings.phase)
            if self.probe is not None:
                self.probe(model, method, step, settings.total_steps)

        checkpoint = None
        if self.checkpoints is not None:
            checkpoint = PhaseCheckpoint(self, self.phase_index, start)
        self.phase_index += 1
        result = run_loop(model, method, self.train.features, self.task.collate, settings,
                          self.accelerator, self.clock, on_eval=on_eval, checkpoint=checkpoint)
        self.steps_done = start + result.steps
        summary = method.summary()
        self.phases.append({"phase": settings.phase, "method": method.name,
                            "steps": result.steps, "lr": settings.lr,
                            "final_loss": result.losses[-1] if result.losses else None,
                            "optimizer_rebuilds": result.rebuilds, **summary})
        self.costs += [{**c, "step": start + c["step"], "phase": settings.phase}
                       for c in result.costs]
        self.events += [{"step": start + e["step"], "kind": "pruning event"}
                        for e in summary.get("pruning_log", [])]
        self.events += [{"step": start + e["step"], "kind": "compaction"}
                        for e in summary.get("compactions", [])]
        return model

    def training_batches(self, count: int):
        """The first ``count`` batches the training loop draws (its seeded order), on the
        device: what APT's one-shot pruning scores before step 0."""
        cfg = self.config.train
        for step in range(count):
            idx = batch_indices(step, len(self.train), cfg.batch_size, self.config.seed)
            batch = self.task.collate([self.train.features[i] for i in idx])
            yield {k: v.to(self.device) for k, v in batch.items()}

    def batches(self, max_samples: int, batch_size: int | None = None):
        """Collated training batches over the first ``max_samples`` examples (for mask search)."""
        bs = batch_size or self.config.train.batch_size
        n = min(max_samples, len(self.train))
        for i in range(0, n, bs):
            batch = self.task.collate(self.train.features[i:min(i + bs, n)])
            yield {k: v.to(self.device) for k, v in batch.items()}


class PhaseCheckpoint:
    """One phase's checkpoint: the loop's state plus the run's curve, costs and clock."""

    def __init__(self, ctx: TrainContext, index: int, start: int) -> None:
        self.ctx, self.index, self.start = ctx, index, start

    def save(self, step: int, model: nn.Module, optimizer, method: TrainMethod, result) -> None:
        from lmprune.training.checkpoint import model_state, rng_state

        ctx = self.ctx
        self.ctx.checkpoints.save(self.index, {
            "step": step, "model": model_state(model), "optimizer": optimizer.state_dict(),
            "method": method.state_dict(), "losses": result.losses,
            "rebuilds": result.rebuilds, "costs": result.costs, "rng": rng_state(),
            "context": {"curve": ctx.curve, "costs": ctx.costs, "events": ctx.events,
                        "phases": ctx.phases, "clock": ctx.clock.seconds,
                        "probe": ctx.probe.log if ctx.probe is not None else None}})

    def load(self) -> dict | None:
        saved = self.ctx.checkpoints.load(self.index)
        if saved is None:
            return None
        ctx, state = self.ctx, saved["context"]
        ctx.curve, ctx.costs, ctx.events = state["curve"], state["costs"], state["events"]
        ctx.phases, ctx.clock.elapsed = state["phases"], state["clock"]
        ctx.steps_done = self.start + saved["step"]
        if ctx.probe is not None and state["probe"] is not None:
            ctx.probe.log = state["probe"]
        return saved