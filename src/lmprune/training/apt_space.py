"""APT's units in two index spaces: the dense model's, and the model's as it is now.

APT keeps its state (masks, targets, salience EMA, the teacher's masks, random scores) per
unit of the *dense* model, so every event ranks the same units by the same indices whatever
was removed. A unit is *alive* until a compaction point finds its mask at exactly 0; from
then on it is dead for good (APT's code removes such blocks at its pruning steps).

With compaction (``apt.compact=true``) dead units are physically removed from the model,
so the model's unit ``k`` of a site is the ``k``-th alive unit of that site in the dense
space; :meth:`UnitSpace.to_model` cuts dense-space masks down to the model's units and
:meth:`UnitSpace.to_dense` spreads the model's salience back (dead units score 0, as a masked
unit does). Without compaction the model keeps every unit and both spaces are the same;
dead units only leave the ranking.
"""
from __future__ import annotations

import torch
from torch import nn

from lmprune.arch import ModelStructure, describe
from lmprune.structures.masks import Masks


def _nonzero(mask: torch.Tensor) -> torch.Tensor:
    return torch.nonzero(mask != 0).flatten()


class _Indices:
    """The alive indices of each alive mask, kept until the mask changes in place (its
    ``_version``): ``nonzero`` waits for the device, and the compacted model needs these
    indices on every forward pass while they change only at pruning events."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[torch.Tensor, int, torch.Tensor]] = {}

    def __call__(self, mask: torch.Tensor, device: torch.device) -> torch.Tensor:
        hit = self._cache.get(id(mask))
        if hit is None or hit[0] is not mask or hit[1] != mask._version \
                or hit[2].device != torch.device(device):
            hit = (mask, mask._version, _nonzero(mask).to(device))
            self._cache[id(mask)] = hit
        return hit[2]


class UnitSpace:
    """Alive units per site (dense indices) and the structure of the model as it is now."""

    def __init__(self, structure: ModelStructure, alive: Masks, compact: bool) -> None:
        self.dense, self.alive, self.compact = structure, alive, compact
        self.current = structure  # describe(model) after the last removal
        self.removals = 0
        self.indices = _Indices()

    # --- dense space -> model space -------------------------------------------------------
    def to_model(self, masks: Masks) -> Masks:
        """``masks`` (dense space) as the model needs them: cut to the alive units when the
        model is compacted (a differentiable ``index_select``: a mask that requires grad gets
        its gradient in the dense space), unchanged otherwise."""
        if not self.compact or not self.removals:
            return masks
        cur = self.current
        return Masks(
            heads={s.name: self._take(masks.heads[s.name], self.alive.heads[s.name])
                   for s in cur.attention if s.name in masks.heads},
            neurons={s.name: self._take(masks.neurons[s.name], self.alive.neurons[s.name])
                     for s in cur.ffn if s.name in masks.neurons},
            hidden=None if masks.hidden is None else self._take(masks.hidden,
                                                                self.alive.hidden))

    def _take(self, mask: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
        return mask.index_select(0, self.indices(alive, mask.device))

    def to_dense(self, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Model-space scores (``heads/<site>``, ``neurons/<site>``, ``hidden``) in the dense
        space; dead units and sites score 0."""
        if not self.compact or not self.removals:
            return scores
        out = {}
        for key, value in scores.items():
            kind, _, site = key.partition("/")
            alive = self.alive.hidden if kind == "hidden" else getattr(self.alive, kind)[site]
            full = value.new_zeros(alive.shape)
            full[self.indices(alive, value.device)] = value
            out[key] = full
        for s in self.dense.attention:  # sites removed whole score 0 everywhere
            out.setdefault(f"heads/{s.name}", None)
        return {k: v for k, v in out.items() if v is not None}

    def collector_alive(self) -> Masks | None:
        """What the salience collector must treat as alive: nothing to say for a compacted
        model (it holds alive units only) or while nothing died; else the alive masks."""
        if self.compact or not any(bool((t == 0).any()) for _, _, t in self.alive.items()):
            return None
        return self.alive

    # --- deaths ---------------------------------------------------------------------------
    def dies(self, masks: Masks) -> bool:
        """Whether an alive unit has a mask of exactly 0 (what :meth:`kill` would prune)."""
        return any(bool(((alive != 0) & (current == 0)).any())
                   for (_, _, alive), (_, _, current) in zip(self.alive.items(), masks.items(),
                                                             strict=True))

    def kill(self, masks: Masks) -> Masks | None:
        """Units alive with a mask of exactly 0 die. Returns the binary keep masks of the
        model's current units (only sites that lose units; what removal takes), or None when
        none dies. The alive masks are updated."""
        keep = Masks()
        for kind in ("heads", "neurons"):
            for site, alive in getattr(self.alive, kind).items():
                dead = (alive != 0) & (getattr(masks, kind)[site] == 0)
                if bool(dead.any()):
                    getattr(keep, kind)[site] = self._model_keep(alive, dead)
        if self.alive.hidden is not None:
            dead = (self.alive.hidden != 0) & (masks.hidden == 0)
            if bool(dead.any()):
                keep.hidden = self._model_keep(self.alive.hidden, dead)
        if not keep.heads and not keep.neurons and keep.hidden is None:
            return None
        with torch.no_grad():
            for kind, site, alive in list(self.alive.items()):
                if kind in ("heads", "neurons", "hidden"):
                    current = masks.hidden if kind == "hidden" else getattr(masks, kind)[site]
                    alive.mul_((current != 0).to(alive.dtype))
        return keep

    def _model_keep(self, alive: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
        survives = ((alive != 0) & ~dead).to(alive.dtype)
        return survives[_nonzero(alive)] if self.compact else survives

    def removed(self, model: nn.Module) -> None:
        """The model lost units physically: describe it again."""
        self.current = describe(model)
        self.removals += 1

    # --- sizes the compacted model has (and the masked model has in effect) ---------------
    def count(self, kind: str, site: str | None = None) -> int:
        if kind == "hidden":
            return (int((self.alive.hidden != 0).sum()) if self.alive.hidden is not None
                    else self.dense.hidden.size)
        table = getattr(self.alive, kind)
        if site in table:
            return int((table[site] != 0).sum())
        sites = self.dense.attention if kind == "heads" else self.dense.ffn
        s = next(x for x in sites if x.name == site)
        return s.num_heads if kind == "heads" else s.width

    def channels(self, kind: str, site: str | None = None, group: int = 1) -> torch.Tensor | None:
        """Alive channels (dense indices) of a hidden/heads/neurons dimension; None = all."""
        mask = self.alive.hidden if kind == "hidden" else getattr(self.alive, kind).get(site)
        if mask is None:
            return None
        return _nonzero(mask.repeat_interleave(group)).cpu()

    def kv_count(self, site) -> int:
        """Alive key/value groups of an attention site (a group lives while a head does)."""
        heads = self.alive.heads.get(site.name)
        if heads is None or site.group_size == 1:
            return self.count("heads", site.name) if site.group_size == 1 else site.num_kv_heads
        return int((heads.reshape(-1, site.group_size) != 0).any(1).sum())



def adapter_roles(structure: ModelStructure) -> dict[str, tuple]:
    """``path -> (input spec, output spec)`` of every linear an adapter may wrap, where a spec
    is ``("hidden",)``, ``("heads", site, head_dim)``, ``("kv", site, head_dim)`` or
    ``("neurons", site)``: what its in/out dimension counts."""
    roles: dict[str, tuple] = {}
    for s in structure.attention:
        heads, kv = ("heads", s.name, s.head_dim), ("kv", s.name, s.head_dim)
        roles[s.q] = (("hidden",), heads)
        roles[s.k] = (("hidden",), kv if s.group_size > 1 else heads)
        roles[s.v] = (("hidden",), kv if s.group_size > 1 else heads)
        roles[s.o] = (heads, ("hidden",))
    for s in structure.ffn:
        for path in s.ins:
            roles[path] = (("hidden",), ("neurons", s.name))
        roles[s.out] = (("neurons", s.name), ("hidden",))
    return roles


def spec_size(space: UnitSpace, spec: tuple) -> int:
    """The size of a dimension (:func:`adapter_roles`) with the alive units of ``space``."""
    if spec[0] == "hidden":
        return space.count("hidden")
    if spec[0] == "neurons":
        return space.count("neurons", spec[1])
    site = next(s for s in space.dense.attention if s.name == spec[1])
    units = space.count("heads", site.name) if spec[0] == "heads" else space.kv_count(site)
    return units * spec[2]


def spec_channels(space: UnitSpace, spec: tuple) -> torch.Tensor | None:
    """Alive channels of an input dimension (None: all of them)."""
    if spec[0] == "hidden":
        return space.channels("hidden")
    if spec[0] == "neurons":
        return space.channels("neurons", spec[1])
    if spec[0] == "heads":
        return space.channels("heads", spec[1], spec[2])
    return None
