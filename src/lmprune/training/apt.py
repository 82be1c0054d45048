"""APT as a training method: adaptive pruning + adaptive tuning + self-distillation.

Zhao, Hajishirzi, Cao, "APT: Adaptive Pruning and Tuning Pretrained Language Models for
Efficient Training and Inference" (ICML 2024). Per step (Sec. 4):

1. teacher forward (with distillation on, from the first pruning event to the stop step, or
   ``apt.distill_epochs``; then the teacher is freed): the same model with a frozen snapshot
   of the adapters and masks (:mod:`lmprune.training.apt_teacher`);
2. student forward with the current masks and a salience collector; loss
   ``mu * L_distill + (1 - mu) * L_ft`` (Eq. 6);
3. after backward: block salience (outlier-aware by default) and adapter importance
   ``sum |B * dL/dB|`` update their EMAs (beta 0.85);
4. after the optimizer step: masks move one step toward their binary targets (with
   ``apt.selection=step`` the targets are chosen again first); at a pruning event the target
   keep ratio (cubic schedule) becomes a parameter budget, the budget search picks new targets
   by salience density, and the most important half of the adapters grow their rank so that
   tuning parameters grow linearly to ``growth_factor`` x by the last event.

**Compaction** (``apt.compact``, default on): at every pruning event, and once more when the
masks have reached the last event's targets, every unit whose mask is exactly 0 is pruned for
good and physically removed from the backbone, its adapters, the optimizer state (AdamW's
moments are cut, not reset), the layer transform and the teacher; training goes on with the
smaller model (:mod:`lmprune.training.compaction`). Masks still moving toward 0 stay until
the next compaction point. ``apt.compact=false`` keeps every unit masked until the end and
computes the same losses (tested).

``finish`` makes the masks binary, merges the adapters and removes what is left to remove.
The building blocks: ``tuners/apt_adapter.py``, ``scorers/apt_salience.py``,
``pruners/apt_schedule.py``, ``pruners/apt_cost.py``, ``training/apt_select.py``,
``training/apt_space.py``, ``training/distill.py``, ``training/apt_teacher.py``; this file
wires them. What each ``apt.*`` switch removes or replaces: docs/apt.md.
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
from lmprune.pruners.apt_cost import CostModel, kept_counts
from lmprune.pruners.apt_schedule import keep_ratio, move_masks, pruning_events
from lmprune.scorers import apt_salience as sal
from lmprune.structures.masks import Masks, apply_masks
from lmprune.structures.moves import ParamMoves
from lmprune.structures.removal import remove
from lmprune.training import apt_select as select
from lmprune.training import distill
from lmprune.training.apt_parts import (adapter_importance, grow_ranks, layer_modules,
                                        magnitude_scores, ones_on)
from lmprune.training.apt_space import UnitSpace, adapter_roles, spec_channels, spec_size
from lmprune.training.apt_state import apt_state, restore_apt
from lmprune.training.apt_teacher import APTTeacher, clone_masks
from lmprune.training.compaction import compact
from lmprune.training.loop import AUTOCAST_DTYPES, data_parallel
from lmprune.training.method import TrainMethod, unfreeze_heads
from lmprune.tuners.apt_adapter import APTLinear, apply_apt, apt_modules, merge_apt
from lmprune.tuners.frozen_storage import restore_frozen, store_as_set
from lmprune.tuners.saved_input import autocasting, inputs_alive_anyway

log = logging.getLogger(__name__)


class APTMethod(TrainMethod):
    """APT with every component switchable through :class:`lmprune.config.APTConfig`."""

    name = "apt"

    def __init__(self, cfg, keep: float, total_steps: int, steps_per_epoch: int,
                 task_type: str = "classification", seed: int = 0,
                 calibration: Callable[[], Iterable[dict]] | None = None,
                 mixed_precision: str = "no") -> None:
        """``calibration`` returns the training batches that ``apt.schedule=oneshot`` scores
        before step 0 (forward + backward, no optimizer step); ``mixed_precision`` is the
        loop's (``train.mixed_precision``), for ``apt.frozen_dtype=autocast``."""
        self.cfg, self.keep, self.total = cfg, keep, total_steps
        self.autocast_dtype = AUTOCAST_DTYPES.get(mixed_precision)
        self.task_type = "classification" if task_type == "regression" else task_type
        stop = max(1, min(round(cfg.prune_stop_epochs * steps_per_epoch), int(0.9 * total_steps)))
        self.start, self.stop = min(cfg.prune_start, stop - 1), stop  # mu: 0 to 1 over it
        self.steps_per_epoch = steps_per_epoch
        self.events = self._events(cfg)
        self.calibration, self.calibrated_batches = calibration, 0
        gaps = [b - a for a, b in zip(self.events, self.events[1:], strict=False)]
        self.mask_moves = max(1, min(gaps, default=1))  # moves from a mask to its target
        self.mask_step = 1.0 / self.mask_moves
        self.generator, self.rng = torch.Generator().manual_seed(seed), random.Random(seed)
        self.ema = sal.SalienceEMA(cfg.ema)
        self.adapter_ema: dict[str, float] = {}
        self.log, self.compactions = [], []  # per event; per compaction
        self.removals: list[Masks] = []  # keep masks of every compaction (for resuming)
        self.teacher: APTTeacher | None = None
        self.best_teacher_metric = float("-inf")
        self._collector, self._random = None, None  # this step's collector; random scores
        self._moves: ParamMoves | None = None
        self.ratio = 1.0  # the keep ratio of the latest event
        self.settled = False  # the last event's targets were reached (and compacted)
        self.moves_left = 0  # mask moves until every mask is at its target (host-side count)
        self.notes: list[str] = []
        if cfg.schedule in ("cubic", "late") and self.stop > 0.5 * total_steps:
            self.notes.append(
                f"pruning runs until step {self.stop} of {total_steps} "
                f"({self.stop / total_steps:.0%} of training): the pruned model trains only for "
                f"the rest, so APT's training-time and memory savings have little room to show "
                f"(APT's scripts prune for the first ~8% of training; apt.prune_stop_epochs, "
                f"train.epochs)")
            log.info(self.notes[-1])
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
        self.structure = describe(model)  # the dense model: the index space of all state
        self.processes = data_parallel(getattr(ctx, "accelerator", None))
        self.kinds = tuple(k for k in ("heads", "neurons", "hidden") if k in cfg.structures)
        self.cost = CostModel.of(model, self.structure)
        self.dense_cost = self.cost.total()
        device = next(model.parameters()).device
        self.masks = ones_on(self.structure, self.kinds, device)
        self.targets = ones_on(self.structure, self.kinds, device)
        self.space = UnitSpace(self.structure, ones_on(self.structure, self.kinds, device),
                               compact=cfg.compact)
        self._dense_space = UnitSpace(self.structure, ones_on(self.structure, self.kinds,
                                                              "cpu"), compact=False)
        self.adapters = self._tuned(model)
        self.model_dtype = next(model.parameters()).dtype  # what frozen weights compute in
        stored, self.frozen_saved = store_as_set(model, cfg.frozen_dtype, self.model_dtype,
                                                 device, self.autocast_dtype)
        if self.frozen_saved:
            self.notes.append(f"frozen weights stored in {str(stored).removeprefix('torch.')} "
                              f"(apt.frozen_dtype={cfg.frozen_dtype}): "
                              f"{self.frozen_saved / 1e6:.1f} MB less")
            log.info(self.notes[-1])
        self.roles = adapter_roles(self.structure)
        self.initial_adapter_params = self._adapter_params()
        self.transform = None
        if cfg.distill:
            self.transform = distill.LayerTransform(self.structure.hidden.size).to(device)
        self.teacher = APTTeacher(cfg.teacher, self.structure,
                                  follows_student=cfg.teacher_structure == "student",
                                  dtype=cfg.teacher_dtype, model_dtype=self.model_dtype)
        if cfg.salience == "fisher":
            for m in _flat(self.masks).values():
                m.requires_grad_(True)
        if self.events and self.events[0] == 0:  # one-shot: prune before the first step
            self._calibrate(model)
            self._prune_event(model, 0)
            self._compaction_point(model, 0)
            self._moves = None  # no optimizer yet
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
        for adapter in adapters.values():
            adapter.saved_input = cfg.saved_input_dtype
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

    def parameter_groups(self, model: nn.Module, lr: float) -> list[dict]:
        params = [p for p in model.parameters() if p.requires_grad]
        if self.transform is not None:
            params += list(self.transform.parameters())
        return [{"params": params, "lr": lr}]

    def held_tensors(self):
        teacher = self.teacher
        if teacher is not None and teacher.model is not None:
            yield from teacher.model.parameters()
        elif teacher is not None and teacher.state:
            yield from teacher.state.values()
        for masks in (self.masks, self.targets, self.space.alive):
            yield from (t for _, _, t in masks.items())

    def state_dict(self) -> dict:
        return apt_state(self)

    def load_state_dict(self, model: nn.Module, state: dict) -> None:
        restore_apt(self, model, state)

    def take_moves(self) -> ParamMoves | None:
        moves, self._moves = self._moves, None
        return moves

    # --- one step -------------------------------------------------------------------------
    @contextlib.contextmanager
    def active(self, model: nn.Module) -> Iterator[nn.Module]:
        """The masks on ``model``; none while every one is 1 (no target chosen yet, or settled
        and compacted) and no salience reads their gradients: x * 1 is x."""
        ones = self.cfg.salience != "fisher" and (
            not self.log or (self.settled and self.cfg.compact))
        with contextlib.nullcontext() if ones else apply_masks(
                model, self.space.to_model(self.masks), self.space.current,
                check_values=False):  # our own masks: no device read every step
            yield model

    def _distilling(self, step: int) -> bool:
        return bool(self.cfg.distill and self.events and self.start <= step < self.distill_end)

    @property
    def distill_end(self) -> int:
        """The first step without distillation: ``apt.distill_epochs`` after its start, by
        default the stop step (the pruning window; a step past the last one: to the end)."""
        if self.cfg.distill_epochs is None:
            return self.stop
        return self.start + max(1, int(round(self.cfg.distill_epochs * self.steps_per_epoch)))

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
            self.teacher.snapshot(model, self.masks, self.space)

    def _new_collector(self, model: nn.Module) -> sal.SalienceCollector | None:
        if self.cfg.salience != "outlier":
            return None
        return sal.SalienceCollector(model, self.space.current, use_kurtosis=self.cfg.kurtosis,
                                     hidden="hidden" in self.kinds,
                                     outlier_scale=self.cfg.outlier_scale,
                                     alive=self.space.collector_alive(),
                                     processes=self.processes)

    def loss(self, model: nn.Module, batch: dict, step: int) -> torch.Tensor:
        distilling = self._distilling(step)
        if distilling and not self.teacher.ready:  # pruning started: freeze the teacher
            self.teacher.snapshot(model, self.masks, self.space)
        teacher = self.teacher.distilled(model, batch, self.space, self.cfg.teacher_layers,
                                         self.rng) if distilling else None
        self._collector = self._new_collector(model) if self._scoring(step) else None
        # layer inputs are returned (kept to the end): adapters keep them, not narrow copies
        narrow = distilling and (self.cfg.saved_input_dtype != "model" or autocasting())
        alive = (inputs_alive_anyway(layer_modules(model, self.structure)) if narrow
                 else contextlib.nullcontext())
        with self.forward_scope(self.active(model), self._collector or contextlib.nullcontext(),
                                alive):
            out = model(**batch, output_hidden_states=distilling)
        if teacher is None:
            return out.loss
        t_logits, t_hidden, ids = teacher
        pred = distill.prediction_distillation(distill.output_logits(out), t_logits,
                                               self.cfg.temperature)
        s_hidden = distill.output_hidden(out)
        n = len(s_hidden) - 1
        if len(t_hidden) != len(s_hidden):
            raise LmpruneError(f"the teacher returned {len(t_hidden)} hidden states and the "
                               f"student {len(s_hidden)}; they must have the same layers")
        channels = None if self.cfg.compact else self.space.channels("hidden")
        t_channels = self.teacher.channels(self.space) if self.cfg.compact else channels
        mapping = distill.match_layers(s_hidden, t_hidden, ids, self._surviving(n),
                                       self.transform, channels, t_channels)
        layer = distill.layer_distillation(s_hidden, t_hidden, mapping, self.transform,
                                           channels=channels, teacher_channels=t_channels)
        return distill.total_loss(out.loss, pred, layer, self.distill_weight(step),
                                  self.task_type)

    def _surviving(self, n: int) -> list[bool]:
        """Student layers that keep a unit in every head and neuron site (APT's ``layer_z``)
        of the stack whose ``n`` layer outputs are distilled (T5: the decoder)."""
        stacks: dict[str, list] = {}
        for layer in self.structure.layers:
            stacks.setdefault(layer.stack, []).append(layer)
        layers = [v for v in stacks.values() if len(v) == n]
        if not layers:
            return [True] * n
        kept = self._kept_sites()
        return [all(kept.get(site, True) for site in layer.attention + layer.ffn)
                for layer in layers[-1]]

    def _masks_version(self) -> tuple:
        """Changes whenever a mask is replaced or changed in place (answers derived from the
        masks are cached under it, so that they read the device only when it changes)."""
        return tuple((kind, site, id(t), t._version) for kind, site, t in self.masks.items())

    def _on_masks(self, name: str, compute):
        """``compute()`` cached under ``name`` until a mask changes (:meth:`_masks_version`):
        answers that read the masks back from the device read them only after a change."""
        cache = self.__dict__.setdefault("_masks_cache", {})
        key = self._masks_version()
        if name not in cache or cache[name][0] != key:
            cache[name] = (key, compute())
        return cache[name][1]

    def _kept_sites(self) -> dict[str, bool]:
        """Whether each head/neuron site keeps a unit: one device read for all sites."""
        def compute():
            items = [*self.masks.heads.items(), *self.masks.neurons.items()]
            flags = torch.stack([(v != 0).any() for _, v in items]).tolist() if items else []
            return dict(zip((k for k, _ in items), flags, strict=True))

        return self._on_masks("kept_sites", compute)

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

    def grad_tensors(self):
        masks = getattr(self, "masks", None)
        return list(_flat(masks).values()) if masks is not None else []

    def _observe_adapters(self, model: nn.Module) -> None:
        """EMA of each adapter's importance (what adaptive rank growth ranks by)."""
        if self.cfg.rank_growth != "adaptive" or not self.adapters:
            return
        for path, value in adapter_importance(apt_modules(model)).items():
            old = self.adapter_ema.get(path)
            b = self.cfg.ema
            self.adapter_ema[path] = value if old is None else b * old + (1 - b) * value

    def _salience(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """This step's block scores in the dense space (after backward); random scores are
        drawn once per run at the first event instead (:meth:`_stacked_salience`)."""
        kind = self.cfg.salience
        if kind == "outlier":
            if self._collector is None:
                return {}
            return self.space.to_dense(self._collector.as_dict())
        if kind == "fisher":
            out = {}
            for key, m in _flat(self.masks).items():
                if m.grad is not None:
                    out[key] = m.grad.detach().double().pow(2)
                    m.grad = None
            return out
        if kind == "magnitude":
            return self.space.to_dense(magnitude_scores(model, self.space, "hidden" in self.kinds))
        return {}

    def after_step(self, model: nn.Module, step: int) -> bool:
        done = step + 1
        if done == self.distill_end and self.teacher is not None:
            self.teacher.release()  # distillation is over: the teacher's memory is freed
        if self.cfg.selection == "step" and self._reselects(done):
            self._choose(self.ratio, last=False)
        if not self.settled and self.moves_left > 0:  # else every mask is at its target
            self.moves_left -= 1
            with torch.no_grad():
                targets = _flat(self.targets)
                for key, m in _flat(self.masks).items():  # targets are binary by construction
                    m.copy_(move_masks(m, targets[key], self.mask_step, check=False))
        if done in self.events:
            compacted = self._compaction_point(model, done)
            return self._prune_event(model, done) or compacted
        if self.events and done > self.events[-1] and not self.settled and done < self.total:
            if all(torch.equal(m, _flat(self.targets)[k]) for k, m in _flat(self.masks).items()):
                self.settled = True
                return self._compaction_point(model, done)
        return False

    def _reselects(self, done: int) -> bool:
        """``apt.selection=step``: between the first and the last event, the targets are
        chosen again after every step (masks can come back), at the latest event's ratio."""
        return bool(self.events) and self.events[0] < done < self.events[-1]

    # --- pruning events, compaction and rank growth ---------------------------------------
    def _prune_event(self, model: nn.Module, step: int) -> bool:
        cfg = self.cfg
        last = step == self.events[-1]
        ratio = self.keep if last else keep_ratio(
            step, cfg.schedule if cfg.schedule != "gradual" else "cubic",
            self.start, max(self.stop, self.start + 1), self.total, self.keep)
        self.ratio = ratio
        keep = self._choose(ratio, last=last, step=step)
        trains_after = step < self.total
        grown = self._grow(model, len([e for e in self.events if e <= step])) if trains_after else 0
        self.log.append({"step": step, "target_keep": round(ratio, 4),
                         "kept": {k: int(v.sum()) for k, v in keep.items()},
                         "adapter_params": self._adapter_params(), "grown": grown})
        if step == 0 or not trains_after:  # no steps to move the masks in: binary at once
            with torch.no_grad():
                for key, m in _flat(self.masks).items():
                    m.copy_(_flat(self.targets)[key])
        return grown > 0

    def _choose(self, ratio: float, last: bool, step: int | None = None
                ) -> dict[str, torch.Tensor]:
        """New targets at ``ratio`` x the dense body (FFN widths rounded at the last event)."""
        saliences = self._stacked_salience(step)
        keep = select.choose(saliences, self.cost, ratio * self.dense_cost, self.space.alive,
                             self.structure, self.cfg.min_units,
                             self.cfg.round_to if last else 1)
        select.write_targets(self.targets, keep, self.structure)
        self.moves_left = self.mask_moves  # move_masks lands exactly on binary targets by then
        return keep

    def _compaction_point(self, model: nn.Module, step: int) -> bool:
        """Units whose mask is exactly 0 are pruned for good; with ``apt.compact`` they leave
        the model, its adapters, the layer transform, the teacher and (through
        :meth:`take_moves`) the optimizer state. Returns True when tensors were replaced."""
        if self.cfg.compact and self.space.dies(self.masks):  # before the alive units change
            self.teacher.before_compaction(model, self.space)
        keep = self.space.kill(self.masks)
        if keep is None or not self.cfg.compact:
            return False
        names = {id(p): n for n, p in model.named_parameters()}
        before = sum(p.numel() for p in model.parameters())
        structure = self.space.current
        moves = compact(model, keep, structure, followers=[self.transform])
        self.teacher.follow(moves, names, model, keep, structure)
        self.removals.append(clone_masks(keep))
        self.space.removed(model)
        self.adapters = apt_modules(model)
        self.adapter_ema = {p: v for p, v in self.adapter_ema.items() if p in self.adapters}
        self._moves = moves
        after = sum(p.numel() for p in model.parameters())
        self.compactions.append({"step": step, "params_before": before, "params_after": after,
                                 "trainable": sum(p.numel() for p in model.parameters()
                                                  if p.requires_grad)})
        return True

    def _stacked_salience(self, step: int | None) -> dict[str, torch.Tensor]:
        """Salience per kind as ``[sites, units]`` (hidden: ``[d]``) in the dense space: the
        EMA, or for ``apt.salience=random`` one proportional random draw per run times the
        current unit costs (the same order at every event, so blocks pruned early stay
        pruned)."""
        if self.cfg.salience == "random":
            if self._random is None:
                self._random = select.random_densities(self.structure, self.kinds,
                                                       self.generator)
            return select.times_cost(self._random, self.cost, self.space.alive)
        out = select.ema_salience(self.ema.value, self.structure, self.kinds)
        if step is not None:  # the events, not every step of apt.selection=step
            select.require_salience(out, select.stacked(self.space.alive, out),
                                    self.structure, step)
        return out

    def _adapter_dims(self, dense: bool = False) -> dict[str, tuple[int, int]]:
        """Each adapter's ``(d_in, d_out)`` counting alive units (what a compacted model
        holds), or with ``dense`` its dimensions in the dense model."""
        space = self._dense_space if dense else self.space
        out = {}
        for path, a in self.adapters.items():
            spec_in, spec_out = self.roles.get(path, (None, None))
            out[path] = (spec_size(space, spec_in) if spec_in else a.in_features,
                         spec_size(space, spec_out) if spec_out else a.out_features)
        return out

    def _adapter_params(self) -> int:
        """Tuning parameters of the adapters, alive dimensions only (they shrink with pruning
        and grow with rank)."""
        dims = self._adapter_dims()
        return sum(a.rank * sum(dims[p]) for p, a in self.adapters.items())

    def _grow(self, model: nn.Module, events_done: int) -> int:
        if self.cfg.rank_growth == "static" or not self.adapters:
            return 0
        goal = self.initial_adapter_params * (
            1 + (self.cfg.growth_factor - 1) * events_done / len(self.events))
        self.adapters = apt_modules(model)
        columns = None
        if not self.cfg.compact:  # new A rows over the alive input channels only
            columns = {p: spec_channels(self.space, self.roles[p][0]) if p in self.roles
                       else None for p in self.adapters}
        order = None if self.cfg.rank_growth == "uniform" else self.adapter_ema
        dims = self._adapter_dims(dense=self.cfg.growth_counts == "dense")
        return grow_ranks(self.adapters, goal, self.cfg.max_rank, order, self.generator,
                          dims=dims, columns=columns)

    # --- reporting and the end ------------------------------------------------------------
    def keep_ratio(self) -> float:
        """The body the model computes with now (units with a non-zero mask), as a fraction
        of the dense body (:class:`~lmprune.pruners.apt_cost.CostModel`)."""
        if not self.events:
            return 1.0
        def compute():  # a device read
            counts = kept_counts(select.stacked(self.masks, self.kinds))
            return self.cost.total(**counts) / self.dense_cost

        return self._on_masks("keep_ratio", compute)

    def finish(self, model: nn.Module) -> nn.Module:
        with torch.no_grad():
            for key, m in _flat(self.masks).items():
                m.requires_grad_(False)
                m.copy_(_flat(self.targets)[key])
        restore_frozen(model, self.model_dtype)  # the weights leave in the model's dtype
        merge_apt(model)
        if self.events:
            remove(model, self.space.to_model(self.masks), self.space.current)
        return model

    def summary(self) -> dict:
        return {"adapter": self.cfg.adapter, "schedule": self.cfg.schedule,
                "compact": self.cfg.compact, "selection": self.cfg.selection,
                "prune_start": self.start, "prune_stop": self.stop, "events": self.events,
                "distill_end": self.distill_end,
                "calibration_batches": self.calibrated_batches,
                "teacher": self.cfg.teacher if self.cfg.distill else None,
                "teacher_snapshots": self.teacher_snapshots,
                "teacher_params": self.teacher.largest if self.teacher else 0,
                "teacher_copy_dtype": self.teacher.copy_dtype if self.teacher else None,
                "frozen_bytes_saved": self.frozen_saved,
                "best_teacher_metric": (None if self.best_teacher_metric == float("-inf")
                                        else self.best_teacher_metric),
                "mask_step": self.mask_step, "initial_adapter_params": self.initial_adapter_params,
                "pruning_log": self.log, "compactions": self.compactions, "notes": self.notes}


def _flat(masks: Masks) -> dict[str, torch.Tensor]:
    flat = {**{f"heads/{k}": v for k, v in masks.heads.items()},
            **{f"neurons/{k}": v for k, v in masks.neurons.items()}}
    if masks.hidden is not None:
        flat["hidden"] = masks.hidden
    return flat
