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
``pruners/apt_budget.py``, ``training/distill.py`` and ``training/apt_teacher.py``; this file
only wires them. What each ``apt.*`` switch removes or replaces: docs/apt.md.
"""
from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from lmprune.arch import describe
from lmprune.errors import LmpruneError
from lmprune.pruners.apt_budget import (model_costs, proportional_random_salience,
                                        select_within_budget)
from lmprune.pruners.apt_schedule import keep_ratio, move_masks, pruning_events
from lmprune.scorers import apt_salience as sal
from lmprune.structures.masks import Masks, apply_masks
from lmprune.structures.removal import remove
from lmprune.training import distill
from lmprune.training.apt_parts import adapter_importance, body_hidden_cost, equal_heads_per_group, grow_ranks, ones_on
from lmprune.training.apt_teacher import APTTeacher
from lmprune.training.method import TrainMethod, unfreeze_heads
from lmprune.tuners.apt_adapter import APTLinear, apply_apt, apt_modules, merge_apt

log = logging.getLogger(__name__)


class APTMethod(TrainMethod):
    """APT with every component switchable through :class:`lmprune.config.APTConfig`."""

    name = "apt"

    def __init__(self, cfg, keep: float, total_steps: int, steps_per_epoch: int,
                 task_type: str = "classification", seed: int = 0,
                 calibration: Callable[[], Iterable[dict]] | None = None) -> None:
        """``calibration`` returns the training batches that ``apt.schedule=oneshot`` scores
        before step 0 (forward + backward, no optimizer step)."""
        self.cfg, self.keep, self.total = cfg, keep, total_steps
        self.task_type = "classification" if task_type == "regression" else task_type
        stop = min(int(round(cfg.prune_stop_epochs * steps_per_epoch)), int(0.9 * total_steps))
        stop = max(stop, 1)
        self.start = min(cfg.prune_start, stop - 1)  # [start, stop]: the distillation window
        self.stop = stop
        self.events = self._events(cfg)
        self.calibration = calibration
        self.calibrated_batches = 0
        gaps = [b - a for a, b in zip(self.events, self.events[1:], strict=False)]
        self.mask_step = 1.0 / max(1, min(gaps, default=1))
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = random.Random(seed)
        self.ema = sal.SalienceEMA(cfg.ema)
        self.adapter_ema: dict[str, float] = {}
        self.log: list[dict] = []
        self.teacher: APTTeacher | None = None
        self.best_teacher_metric = float("-inf")
        self._collector = None
        self._random: dict[str, torch.Tensor] | None = None
        self.notes: list[str] = []
        if cfg.adapter == "none" and cfg.rank_growth != "static":
            self.notes.append(f"apt.rank_growth={cfg.rank_growth} ignored: apt.adapter=none "
                              f"tunes the backbone itself, there are no adapter ranks to grow")
            log.warning(self.notes[-1])

    def _events(self, cfg) -> list[int]:
        """Steps of the pruning events (an event at step s follows s optimizer steps). A
        schedule that moves the pruning window moves the distillation window with it, except
        ``oneshot``, which keeps APT's window (the teacher is taken after some tuning and the
        task loss keeps its weight until then)."""
        if cfg.schedule == "none" or self.keep >= 1.0:
            return []
        if cfg.schedule == "oneshot":  # before step 0, scored on calibration batches
            return [0]
        if cfg.schedule == "late":
            return [self.stop]
        if cfg.schedule == "after":  # after the last step: no pruned model trains, no teacher
            self.start = self.stop = self.total
            return [self.total]
        if cfg.schedule == "gradual":
            self.start, self.stop = 0, int(0.9 * self.total)
        # an event at step 0 keeps everything (the cubic starts at 1) and would have no
        # salience to rank by: only oneshot prunes before the first step
        return [e for e in pruning_events(self.start, self.stop, cfg.events) if e > 0]

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
        self.adapters = self._tuned(model)
        self.initial_adapter_params = self._adapter_params()
        device = next(model.parameters()).device
        self.masks = ones_on(self.structure, tuple(cfg.structures), device)
        self.targets = ones_on(self.structure, tuple(cfg.structures), device)
        self.transform = None
        if cfg.distill:
            self.transform = distill.LayerTransform(self.structure.hidden.size).to(device)
        self.teacher = APTTeacher(cfg.teacher, self.structure)
        if cfg.salience == "fisher":
            for m in _flat(self.masks).values():
                m.requires_grad_(True)
        if self.events and self.events[0] == 0:  # one-shot: prune before the first step
            self._calibrate(model)
            self._prune_event(model, 0)
        return model

    def _tuned(self, model: nn.Module) -> dict[str, APTLinear]:
        """Make what APT tunes trainable: its adapters (backbone frozen), or with
        ``apt.adapter=none`` every backbone weight (full fine-tuning). The task head trains
        unless ``apt.train_head=false``."""
        cfg = self.cfg
        if cfg.adapter == "none":
            model.requires_grad_(True)
            heads = unfreeze_heads(model)
            if not cfg.train_head:
                for name in heads:
                    model.get_submodule(name).requires_grad_(False)
            self.heads = heads if cfg.train_head else []
            return {}
        if not cfg.targets:
            raise LmpruneError("apt.targets is empty: with no adapter and a frozen backbone no "
                               "gradient reaches the blocks, so salience would be zero; to tune "
                               "the backbone without adapters set apt.adapter=none")
        adapters = apply_apt(model, cfg.targets, r=cfg.r, alpha=cfg.alpha,
                             generator=self.generator)
        self.heads = unfreeze_heads(model) if cfg.train_head else []
        return adapters

    def _calibrate(self, model: nn.Module) -> None:
        """Score the blocks on calibration batches before step 0 (forward + backward, no
        optimizer step; gradients are cleared after each batch): one-shot pruning at
        initialisation then ranks blocks by their salience (the mean over the batches)."""
        if self.cfg.salience == "random":
            return  # random scores need no data
        if self.calibration is None:
            raise LmpruneError("apt.schedule=oneshot scores blocks on calibration batches "
                               "before step 0; pass calibration= to APTMethod")
        device = next(model.parameters()).device
        total: dict[str, torch.Tensor] = {}
        model.train()
        for batch in self.calibration():
            self._collector = self._new_collector(model)
            with self.active(model), (self._collector or contextlib.nullcontext()):
                loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
            loss.backward()
            for key, value in self._salience(model).items():
                total[key] = total.get(key, 0) + value
            self._observe_adapters(model)
            model.zero_grad(set_to_none=True)
            self.calibrated_batches += 1
        if not self.calibrated_batches:
            raise LmpruneError("apt.schedule=oneshot got no calibration batches; raise "
                               "apt.calibration_batches or use more training examples")
        self._collector = None
        self.ema.update({k: v / self.calibrated_batches for k, v in total.items()})

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

    def distill_weight(self, step: int) -> float:
        """mu of Eq. 6 at ``step``; the task loss has weight ``1 - mu`` (1 without a teacher)."""
        return distill.mu(step, self.start, self.stop) if self._distilling(step) else 0.0

    @property
    def teacher_snapshots(self) -> int:
        return self.teacher.snapshots if self.teacher is not None else 0

    def on_evaluate(self, model: nn.Module, metric: float, step: int) -> None:
        """``apt.teacher=best``: a dev metric better than every earlier one since pruning
        started makes the current model the teacher (APT's ``self_momentum`` distillation).
        The evaluation after the last step changes nothing: no step is left to distil."""
        if not (self.cfg.distill and self.teacher.refreshes and self._distilling(step)
                and step < self.total):
            return
        if metric > self.best_teacher_metric:
            self.best_teacher_metric = metric
            self.teacher.snapshot(model, self.masks)

    def _new_collector(self, model: nn.Module) -> sal.SalienceCollector | None:
        if self.cfg.salience != "outlier":
            return None
        return sal.SalienceCollector(model, self.structure, use_kurtosis=self.cfg.kurtosis,
                                     hidden="hidden" in self.costs,
                                     outlier_scale=self.cfg.outlier_scale)

    def loss(self, model: nn.Module, batch: dict, step: int) -> torch.Tensor:
        distilling = self._distilling(step)
        if distilling and not self.teacher.ready:  # pruning started: freeze the teacher
            self.teacher.snapshot(model, self.masks)
        teacher = self.teacher.outputs(model, batch) if distilling else None
        self._collector = self._new_collector(model) if self._scoring(step) else None
        with self.active(model), (self._collector or contextlib.nullcontext()):
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
        return distill.total_loss(out.loss, pred, layer, self.distill_weight(step),
                                  self.task_type)

    def _scoring(self, step: int) -> bool:
        """Salience is only needed up to the last pruning event."""
        return bool(self.events) and step < self.events[-1]

    def after_backward(self, model: nn.Module, step: int) -> None:
        if not self._scoring(step):
            return
        scores = self._salience(model)
        if scores:
            self.ema.update(scores)
        self._observe_adapters(model)

    def _observe_adapters(self, model: nn.Module) -> None:
        """EMA of each adapter's importance (what adaptive rank growth ranks by)."""
        if self.cfg.rank_growth != "adaptive" or not self.adapters:
            return
        for path, value in adapter_importance(apt_modules(model)).items():
            old = self.adapter_ema.get(path)
            b = self.cfg.ema
            self.adapter_ema[path] = value if old is None else b * old + (1 - b) * value

    def _salience(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """This step's block scores (after backward); random scores are drawn once per run
        at the first event instead (:meth:`_stacked_salience`)."""
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
        return {}

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
        saliences = self._stacked_salience(step)
        last = step == self.events[-1]
        round_to = {"neurons": cfg.round_to} if last and cfg.round_to > 1 else None
        total = self.body + (self._hidden_total() if "hidden" in self.costs else 0.0)
        keep = select_within_budget(saliences, self.costs, ratio * total, round_to=round_to)
        self._set_targets(keep, saliences)
        trains_after = step < self.total
        grown = self._grow(model, len([e for e in self.events if e <= step])) if trains_after else 0
        self.log.append({"step": step, "target_keep": round(ratio, 4),
                         "kept": {k: int(v.sum()) for k, v in keep.items()},
                         "adapter_params": self._adapter_params_of(model), "grown": grown})
        if step == 0 or not trains_after:  # no steps to move the masks in: binary at once
            with torch.no_grad():
                for key, m in _flat(self.masks).items():
                    m.copy_(_flat(self.targets)[key])
        return grown > 0

    def _hidden_total(self) -> float:
        return float(self.costs["hidden"]) * self.structure.hidden.size

    def _stacked_salience(self, step: int) -> dict[str, torch.Tensor]:
        """Salience per kind as ``[sites, units]`` (hidden: ``[d]``) for the budget search:
        the EMA, or for ``apt.salience=random`` one proportional random draw per run (the same
        at every event, so blocks pruned early stay pruned)."""
        if self.cfg.salience == "random":
            if self._random is None:
                shapes = {"heads": (len(self.structure.attention),
                                    self.structure.attention[0].num_heads),
                          "neurons": (len(self.structure.ffn), self.structure.ffn[0].width),
                          "hidden": (self.structure.hidden.size,)}
                self._random = proportional_random_salience(
                    {k: shapes[k] for k in self.costs}, self.costs, self.generator)
            return self._random
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
        _require_salience(out, self.structure, step)
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
        if self.cfg.rank_growth == "static" or not self.adapters:
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
        return {"adapter": self.cfg.adapter, "schedule": self.cfg.schedule,
                "prune_start": self.start, "prune_stop": self.stop, "events": self.events,
                "calibration_batches": self.calibrated_batches,
                "teacher": self.cfg.teacher if self.cfg.distill else None,
                "teacher_snapshots": self.teacher_snapshots,
                "teacher_params": self.teacher.parameter_count() if self.teacher else 0,
                "best_teacher_metric": (None if self.best_teacher_metric == float("-inf")
                                        else self.best_teacher_metric),
                "mask_step": self.mask_step, "initial_adapter_params": self.initial_adapter_params,
                "pruning_log": self.log, "notes": self.notes}


def _require_salience(saliences: dict[str, torch.Tensor], structure, step: int) -> None:
    """Raise when a site's salience is all zero: the search would keep its units in index
    order, silently (what a frozen backbone without adapters before the site gives)."""
    names = {"heads": [s.name for s in structure.attention],
             "neurons": [s.name for s in structure.ffn], "hidden": ["the residual stream"]}
    for kind, values in saliences.items():
        rows = values.reshape(1, -1) if kind == "hidden" else values
        for name, row in zip(names[kind], rows, strict=True):
            if not torch.any(row != 0):
                raise LmpruneError(
                    f"APT salience of the {kind} of {name} is all zero at the pruning event "
                    f"of step {step}, so they would be pruned in index order; no gradient "
                    f"reached them: put adapters before them (apt.targets) or tune the "
                    f"backbone itself (apt.adapter=none)")


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

