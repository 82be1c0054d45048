"""APT as a training method: adaptive pruning + adaptive tuning + self-distillation.

Zhao, Hajishirzi, Cao, "APT: Adaptive Pruning and Tuning Pretrained Language Models for
Efficient Training and Inference" (ICML 2024). Per step (Sec. 4):

1. teacher forward (after pruning starts, with distillation on): the same model with a frozen
   snapshot of the adapters and no masks (:func:`lmprune.training.distill.teacher_mode`);
2. student forward with the current masks and a salience collector; loss
   ``mu * L_distill + (1 - mu) * L_ft`` (Eq. 6);
3. after backward: block salience (outlier-aware by default) and adapter importance
   ``sum |B * dL/dB|`` update their EMAs (beta 0.85);
4. after the optimizer step: masks move one step toward their binary targets; at a pruning
   event the target keep ratio (cubic schedule) becomes a parameter budget, the budget search
   picks new targets by salience density, and the most important half of the adapters grow
   their rank so that tuning parameters grow linearly to ``growth_factor`` x by the last event.

``finish`` makes the masks binary, merges the adapters into the weights and removes the pruned
heads, neurons and hidden channels physically. The building blocks live in
``tuners/apt_adapter.py``, ``scorers/apt_salience.py``, ``pruners/apt_schedule.py``,
``pruners/apt_budget.py`` and ``training/distill.py``; this file only wires them.
"""
from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import torch
from torch import nn

from lmprune.arch import describe
from lmprune.pruners.apt_budget import model_costs, select_within_budget
from lmprune.pruners.apt_schedule import keep_ratio, move_masks, pruning_events
from lmprune.scorers import apt_salience as sal
from lmprune.structures.masks import Masks, apply_masks
from lmprune.structures.removal import remove
from lmprune.training import distill
from lmprune.training.apt_parts import adapter_importance, body_hidden_cost, equal_heads_per_group, grow_ranks, ones_on
from lmprune.training.method import TrainMethod, unfreeze_heads
from lmprune.tuners.apt_adapter import apply_apt, apt_modules, merge_apt


class APTMethod(TrainMethod):
    """APT with every component switchable through :class:`lmprune.config.APTConfig`."""

    name = "apt"

    def __init__(self, cfg, keep: float, total_steps: int, steps_per_epoch: int,
                 task_type: str = "classification", seed: int = 0) -> None:
        self.cfg, self.keep, self.total = cfg, keep, total_steps
        self.task_type = "classification" if task_type == "regression" else task_type
        stop = min(int(round(cfg.prune_stop_epochs * steps_per_epoch)), int(0.9 * total_steps))
        stop = max(stop, 1)
        self.start = min(cfg.prune_start, stop - 1) if cfg.schedule != "oneshot" else 0
        self.stop = stop if cfg.schedule != "oneshot" else 0
        self.events = self._events(cfg)
        gaps = [b - a for a, b in zip(self.events, self.events[1:], strict=False)]
        self.mask_step = 1.0 / max(1, min(gaps, default=1))
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = random.Random(seed)
        self.ema = sal.SalienceEMA(cfg.ema)
        self.adapter_ema: dict[str, float] = {}
        self.log: list[dict] = []
        self.teacher_state: dict | None = None
        self.teacher_masks: Masks | None = None
        self.teacher_snapshots = 0
        self.best_teacher_metric = float("-inf")
        self._collector = None

    def _events(self, cfg) -> list[int]:
        if cfg.schedule == "none" or self.keep >= 1.0:
            return []
        if cfg.schedule == "oneshot":
            return [0]
        if cfg.schedule == "late":
            return [self.stop]
        start, stop = (0, int(0.9 * self.total)) if cfg.schedule == "gradual" else \
            (self.start, self.stop)
        self.start, self.stop = start, stop
        return pruning_events(start, stop, cfg.events)

    # --- set-up ---------------------------------------------------------------------------
    def setup(self, model: nn.Module, ctx=None) -> nn.Module:
        cfg = self.cfg
        self.structure = describe(model)
        costs = model_costs(model, self.structure)
        self.costs = {k: costs[k] for k in ("heads", "neurons")}
        if "hidden" in cfg.structures:
            self.costs["hidden"] = float(body_hidden_cost(model, self.structure))
        self.costs = {k: v for k, v in self.costs.items() if k in cfg.structures}
        self.body = sum(self._full_cost(k) for k in self.costs if k != "hidden")
        self.adapters = apply_apt(model, cfg.targets, r=cfg.r, alpha=cfg.alpha,
                                  generator=self.generator)
        self.heads = unfreeze_heads(model) if cfg.train_head else []
        self.initial_adapter_params = self._adapter_params()
        device = next(model.parameters()).device
        self.masks = ones_on(self.structure, tuple(cfg.structures), device)
        self.targets = ones_on(self.structure, tuple(cfg.structures), device)
        self.transform = None
        if cfg.distill:
            self.transform = distill.LayerTransform(self.structure.hidden.size).to(device)
        if cfg.salience == "fisher":
            for m in _flat(self.masks).values():
                m.requires_grad_(True)
        if self.events and self.events[0] == 0:  # one-shot: prune before the first step
            self._prune_event(model, 0)
        return model

    def _full_cost(self, kind: str) -> float:
        c = self.costs[kind]
        sizes = {"heads": [s.num_heads for s in self.structure.attention],
                 "neurons": [s.width for s in self.structure.ffn]}[kind]
        return float(sum(float(ci) * n for ci, n in zip(c.tolist(), sizes, strict=True)))

    def _adapter_params(self) -> int:
        return sum(a.lora_A.numel() + a.lora_B.numel() for a in self.adapters.values())

    def parameter_groups(self, model: nn.Module, lr: float) -> list[dict]:
        params = [p for p in model.parameters() if p.requires_grad]
        if self.transform is not None:
            params += list(self.transform.parameters())
        return [{"params": params, "lr": lr}]

    # --- one step -------------------------------------------------------------------------
    @contextlib.contextmanager
    def active(self, model: nn.Module) -> Iterator[nn.Module]:
        with apply_masks(model, self.masks, self.structure):
            yield model

    def _distilling(self, step: int) -> bool:
        return bool(self.cfg.distill and self.events and step >= self.start)

    def _snapshot_teacher(self, model: nn.Module) -> None:
        """The teacher: a frozen copy of the tuning parameters and the masks, taken when pruning
        starts and, with ``apt.teacher=best``, again whenever the dev metric beats every
        earlier one after that (APT's ``self_momentum`` distillation keeps its best model)."""
        self.teacher_state = distill.snapshot_adapters(model)
        self.teacher_masks = _clone(self.masks)
        self.teacher_snapshots += 1

    def on_evaluate(self, model: nn.Module, metric: float, step: int) -> None:
        if not (self.cfg.distill and self.cfg.teacher == "best" and self._distilling(step)):
            return
        if metric > self.best_teacher_metric:
            self.best_teacher_metric = metric
            self._snapshot_teacher(model)

    def loss(self, model: nn.Module, batch: dict, step: int) -> torch.Tensor:
        distilling = self._distilling(step)
        if distilling and self.teacher_state is None:
            self._snapshot_teacher(model)
        teacher = None
        if distilling:
            with distill.teacher_mode(model, self.teacher_state), \
                    apply_masks(model, self.teacher_masks, self.structure):
                teacher = model(**batch, output_hidden_states=True)
        collect = self.cfg.salience == "outlier" and self._scoring(step)
        collector = sal.SalienceCollector(model, self.structure, use_kurtosis=self.cfg.kurtosis,
                                          hidden="hidden" in self.costs,
                                          outlier_scale=self.cfg.outlier_scale) if collect else None
        self._collector = collector
        with self.active(model), (collector or contextlib.nullcontext()):
            out = model(**batch, output_hidden_states=distilling)
        if teacher is None:
            return out.loss
        pred = distill.prediction_distillation(distill.output_logits(out),
                                               distill.output_logits(teacher),
                                               self.cfg.temperature)
        s_hidden, t_hidden = distill.output_hidden(out), distill.output_hidden(teacher)
        n = len(s_hidden) - 1
        ids = distill.teacher_layers(n, self.cfg.teacher_layers, self.rng)
        mapping = distill.match_layers(s_hidden, t_hidden, ids, [True] * n, self.transform)
        layer = distill.layer_distillation(s_hidden, t_hidden, mapping, self.transform)
        m = distill.mu(step, self.start, self.stop)
        return distill.total_loss(out.loss, pred, layer, m, self.task_type)

    def _scoring(self, step: int) -> bool:
        """Salience is only needed up to the last pruning event."""
        return bool(self.events) and step < self.events[-1]

    def after_backward(self, model: nn.Module, step: int) -> None:
        if not self._scoring(step):
            return
        scores = self._salience(model)
        if scores:
            self.ema.update(scores)
        if self.cfg.rank_growth == "adaptive":
            for path, value in adapter_importance(apt_modules(model)).items():
                old = self.adapter_ema.get(path)
                b = self.cfg.ema
                self.adapter_ema[path] = value if old is None else b * old + (1 - b) * value

    def _salience(self, model: nn.Module) -> dict[str, torch.Tensor]:
        kind = self.cfg.salience
        if kind == "outlier":
            return self._collector.as_dict() if self._collector is not None else {}
        if kind == "fisher":
            out = {}
            for key, m in _flat(self.masks).items():
                if m.grad is not None:
                    out[key] = m.grad.detach().float().pow(2)
                    m.grad = None
            return out
        if kind == "magnitude":
            return _magnitude(model, self.structure, "hidden" in self.costs)
        flat = _flat(self.masks)
        return {k: sal.random_salience(v.numel(), self.generator) for k, v in flat.items()}

    def after_step(self, model: nn.Module, step: int) -> bool:
        with torch.no_grad():
            for key, m in _flat(self.masks).items():
                m.copy_(move_masks(m, _flat(self.targets)[key], self.mask_step))
        if (step + 1) in self.events:
            return self._prune_event(model, step + 1)
        return False

    # --- pruning events and rank growth ---------------------------------------------------
    def _prune_event(self, model: nn.Module, step: int) -> bool:
        cfg = self.cfg
        ratio = keep_ratio(step, cfg.schedule if cfg.schedule != "gradual" else "cubic",
                           self.start, max(self.stop, self.start + 1), self.total, self.keep)
        if step == self.events[-1]:
            ratio = self.keep
        saliences = self._stacked_salience()
        last = step == self.events[-1]
        round_to = {"neurons": cfg.round_to} if last and cfg.round_to > 1 else None
        total = self.body + (self._hidden_total() if "hidden" in self.costs else 0.0)
        keep = select_within_budget(saliences, self.costs, ratio * total, round_to=round_to)
        self._set_targets(keep, saliences)
        grown = self._grow(model, len([e for e in self.events if e <= step]))
        self.log.append({"step": step, "target_keep": round(ratio, 4),
                         "kept": {k: int(v.sum()) for k, v in keep.items()},
                         "adapter_params": self._adapter_params_of(model), "grown": grown})
        if step == 0:
            with torch.no_grad():
                for key, m in _flat(self.masks).items():
                    m.copy_(_flat(self.targets)[key])
        return grown > 0

    def _hidden_total(self) -> float:
        return float(self.costs["hidden"]) * self.structure.hidden.size

    def _stacked_salience(self) -> dict[str, torch.Tensor]:
        values = self.ema.value
        out = {}
        if "heads" in self.costs:
            out["heads"] = torch.stack([values.get(f"heads/{s.name}", torch.zeros(s.num_heads))
                                        .float().cpu() for s in self.structure.attention])
        if "neurons" in self.costs:
            out["neurons"] = torch.stack([values.get(f"neurons/{s.name}", torch.zeros(s.width))
                                          .float().cpu() for s in self.structure.ffn])
        if "hidden" in self.costs:
            out["hidden"] = values.get("hidden", torch.zeros(self.structure.hidden.size)).float().cpu()
        return out

    def _set_targets(self, keep: dict[str, torch.Tensor],
                     saliences: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            if "heads" in keep:
                scores = saliences["heads"]
                for i, s in enumerate(self.structure.attention):
                    row = equal_heads_per_group(keep["heads"][i], scores[i], s.group_size)
                    self.targets.heads[s.name].copy_(row)
            if "neurons" in keep:
                for i, s in enumerate(self.structure.ffn):
                    self.targets.neurons[s.name].copy_(keep["neurons"][i])
            if "hidden" in keep:
                self.targets.hidden.copy_(keep["hidden"].reshape(-1))

    def _grow(self, model: nn.Module, events_done: int) -> int:
        if self.cfg.rank_growth == "static":
            return 0
        goal = self.initial_adapter_params * (
            1 + (self.cfg.growth_factor - 1) * events_done / len(self.events))
        adapters = apt_modules(model)
        order = None if self.cfg.rank_growth == "uniform" else self.adapter_ema
        return grow_ranks(adapters, goal, self.cfg.max_rank, order, self.generator)

    def _adapter_params_of(self, model: nn.Module) -> int:
        return sum(a.lora_A.numel() + a.lora_B.numel() for a in apt_modules(model).values())

    # --- reporting and the end ------------------------------------------------------------
    def keep_ratio(self) -> float:
        kept = 0.0
        for kind in ("heads", "neurons"):
            if kind in self.costs:
                for c, m in zip(self.costs[kind].tolist(), getattr(self.masks, kind).values(),
                                strict=True):
                    kept += float(c) * float((m > 0).sum())
        ratio = kept / self.body if self.body else 1.0
        if "hidden" in self.costs:
            ratio *= float((self.masks.hidden > 0).float().mean())
        return ratio

    def finish(self, model: nn.Module) -> nn.Module:
        with torch.no_grad():
            for key, m in _flat(self.masks).items():
                m.requires_grad_(False)
                m.copy_(_flat(self.targets)[key])
        merge_apt(model)
        if self.events:
            remove(model, self.masks, self.structure)
        return model

    def summary(self) -> dict:
        return {"prune_start": self.start, "prune_stop": self.stop, "events": self.events,
                "teacher_snapshots": self.teacher_snapshots,
                "best_teacher_metric": (None if self.best_teacher_metric == float("-inf")
                                        else self.best_teacher_metric),
                "mask_step": self.mask_step, "initial_adapter_params": self.initial_adapter_params,
                "pruning_log": self.log}


def _clone(masks: Masks) -> Masks:
    return Masks(heads={k: v.detach().clone() for k, v in masks.heads.items()},
                 neurons={k: v.detach().clone() for k, v in masks.neurons.items()},
                 hidden=None if masks.hidden is None else masks.hidden.detach().clone())


def _flat(masks: Masks) -> dict[str, torch.Tensor]:
    flat = {**{f"heads/{k}": v for k, v in masks.heads.items()},
            **{f"neurons/{k}": v for k, v in masks.neurons.items()}}
    if masks.hidden is not None:
        flat["hidden"] = masks.hidden
    return flat


def _magnitude(model: nn.Module, structure, hidden: bool) -> dict[str, torch.Tensor]:
    out = {}
    for s in structure.attention:
        w = model.get_submodule(s.o).weight  # [d, heads * head_dim]
        cols = w.detach().T.reshape(s.num_heads, s.head_dim, -1)
        out[f"heads/{s.name}"] = sal.magnitude_salience(cols)
    for s in structure.ffn:
        w = model.get_submodule(s.out).weight  # [d, width]
        out[f"neurons/{s.name}"] = sal.magnitude_salience(w.detach().T)
    if hidden:
        total = 0
        for s in structure.attention:
            total = total + model.get_submodule(s.o).weight.detach().float().abs().sum(1)
        out["hidden"] = total
    return out

