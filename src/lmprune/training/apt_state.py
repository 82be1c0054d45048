"""APT's state in a checkpoint, and its restoration on a freshly set-up model.

The model's shape is part of the state: the removals of every compaction (the binary keep
masks removal took, in the model's units of that moment) are replayed on the reloaded dense
model, and the adapters are grown back to their ranks, before the checkpoint's tensors are
copied in (:mod:`lmprune.training.checkpoint`). Everything else (masks, targets, alive
units, salience EMA, random scores, RNG states, logs, layer transform, teacher) is copied.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from lmprune.arch import describe
from lmprune.structures.masks import Masks
from lmprune.training.apt_teacher import clone_masks
from lmprune.training.compaction import compact
from lmprune.tuners.apt_adapter import apt_modules, merge_apt

_PLAIN = ("adapter_ema", "log", "compactions", "best_teacher_metric", "calibrated_batches",
          "ratio", "settled", "notes", "moves_left")


def _cpu(masks: Masks | None) -> Masks | None:
    return None if masks is None else clone_masks(_moved(masks, "cpu"))


def _moved(masks: Masks, device) -> Masks:
    return Masks(heads={k: v.to(device) for k, v in masks.heads.items()},
                 neurons={k: v.to(device) for k, v in masks.neurons.items()},
                 hidden=None if masks.hidden is None else masks.hidden.to(device))


def apt_state(method) -> dict:
    teacher = method.teacher
    return {
        **{k: copy.deepcopy(getattr(method, k)) for k in _PLAIN},
        "masks": _cpu(method.masks), "targets": _cpu(method.targets),
        "alive": _cpu(method.space.alive), "removals": list(method.removals),
        "ranks": {p: a.rank for p, a in method.adapters.items()},
        "ema": {k: v.cpu() for k, v in method.ema.value.items()}, "random": method._random,
        "generator": method.generator.get_state(), "rng": method.rng.getstate(),
        "transform": None if method.transform is None else method.transform.state_dict(),
        "teacher": {"masks": _cpu(teacher.masks), "snapshots": teacher.snapshots,
                    "largest": teacher.largest, "copy_dtype": teacher.copy_dtype,
                    "state": None if teacher.state is None else
                    {k: v.cpu() for k, v in teacher.state.items()},
                    "model": None if teacher.model is None else teacher.model.state_dict(),
                    "copied_at": teacher.copied_at,
                    "own": None if teacher.own is None else _cpu(teacher.own[0]),
                    "own_hidden": teacher.own_hidden}}


def restore_apt(method, model: nn.Module, state: dict) -> None:
    device = next(model.parameters()).device
    saved_teacher, copy_ = state["teacher"], None
    for i, keep in enumerate(state["removals"]):
        if saved_teacher["model"] is not None and i == saved_teacher["copied_at"]:
            copy_ = _frozen_copy(model)  # the teacher's copy has the shape of that moment
        if i < len(method.removals):  # oneshot removed at set-up
            continue
        compact(model, _moved(keep, device), method.space.current, followers=[method.transform])
        method.space.removed(model)
        method.removals.append(keep)
    if saved_teacher["model"] is not None and copy_ is None:
        copy_ = _frozen_copy(model)
    method.adapters = apt_modules(model)
    for path, rank in state["ranks"].items():
        if method.adapters[path].rank < rank:
            method.adapters[path].grow_rank(rank)  # values come from the checkpoint
    with torch.no_grad():
        for name in ("masks", "targets"):
            for (_, _, mine), (_, _, saved) in zip(getattr(method, name).items(),
                                                   state[name].items(), strict=True):
                mine.copy_(saved)
        for (_, _, mine), (_, _, saved) in zip(method.space.alive.items(),
                                               state["alive"].items(), strict=True):
            mine.copy_(saved)
    for k in _PLAIN:  # a checkpoint from before moves_left: masks may still move
        setattr(method, k, state.get(k, method.mask_moves) if k == "moves_left" else state[k])
    method.ema.value = {k: v.to(device) for k, v in state["ema"].items()}
    method._random = state["random"]
    method.generator.set_state(state["generator"])
    method.rng.setstate(state["rng"])
    if method.transform is not None:
        method.transform.load_state_dict(state["transform"])
    _restore_teacher(method.teacher, copy_, saved_teacher, device)


def _frozen_copy(model: nn.Module) -> nn.Module:
    copy_ = copy.deepcopy(model)
    merge_apt(copy_)
    for p in copy_.parameters():
        p.requires_grad_(False)
    return copy_


def _restore_teacher(teacher, copy_: nn.Module | None, state: dict, device) -> None:
    teacher.snapshots, teacher.copied_at = state["snapshots"], state["copied_at"]
    teacher.largest = state.get("largest", 0)
    teacher.copy_dtype = state.get("copy_dtype")
    teacher.masks = None if state["masks"] is None else _moved(state["masks"], device)
    if state["state"] is not None:
        teacher.state = {k: v.to(device) for k, v in state["state"].items()}
    if copy_ is not None:
        dtypes = {t.dtype for t in state["model"].values() if t.is_floating_point()}
        if len(dtypes) == 1:  # a copy kept in another dtype (apt.teacher_dtype)
            copy_.to(dtypes.pop())
        copy_.load_state_dict(state["model"])
        teacher.model = copy_
        if state["own"] is not None:
            teacher.own = (_moved(state["own"], device), describe(copy_))
            teacher.own_hidden = state["own_hidden"]
