"""Pruning plans: which units of each group a pruned model keeps, as replayable data.

A plan records the *fingerprint* of the model it was made for (every site's size), so replaying
it on a different model fails with a message naming the differences instead of silently
producing garbage. ``apply_plan(load(dense), plan)`` rebuilds the same pruned model.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmprune.arch import ModelStructure, describe
from lmprune.errors import PlanError
from lmprune.structures.masks import Masks

PLAN_FILE = "lmprune_plan.json"
FORMAT_VERSION = 1


def fingerprint(structure: ModelStructure) -> dict:
    """Every prunable size of a model: what a plan must match to apply."""
    return {
        "model_type": structure.model_type,
        "hidden": structure.hidden.size,
        "attention": {s.name: [s.num_heads, s.num_kv_heads, s.head_dim] for s in structure.attention},
        "ffn": {s.name: s.width for s in structure.ffn},
        "layers": [layer.name for layer in structure.layers],
    }


@dataclass
class PruningPlan:
    """Kept indices per group kind and site, plus removed sublayers and layers."""

    base: dict  # fingerprint of the dense model
    keep: dict = field(default_factory=dict)  # kind -> {site: [kept indices]}; "hidden" -> list
    removed: dict = field(default_factory=dict)  # "attention" / "ffn" / "layers" -> [names]
    meta: dict = field(default_factory=dict)  # method, sparsity, seed, ... (free-form)

    @classmethod
    def from_masks(cls, structure: ModelStructure, masks: Masks, meta: dict | None = None) -> "PruningPlan":
        if not masks.is_binary():
            raise PlanError("a plan records binary decisions; binarize soft masks first")
        masks.validate(structure)
        keep: dict = {}
        for kind in ("heads", "kv_groups", "neurons"):
            entries = {site: _kept(t) for site, t in getattr(masks, kind).items()}
            if entries:
                keep[kind] = entries
        if masks.hidden is not None:
            keep["hidden"] = _kept(masks.hidden)
        removed = {kind: sorted(site for site, t in getattr(masks, kind).items() if float(t) == 0)
                   for kind in ("attention", "ffn", "layers")}
        return cls(fingerprint(structure), keep, {k: v for k, v in removed.items() if v}, dict(meta or {}))

    def check(self, structure: ModelStructure) -> None:
        """Raise PlanError if this plan was made for a model of other sizes."""
        mine, theirs = self.base, fingerprint(structure)
        if mine == theirs:
            return
        problems = [f"{key}: plan has {mine.get(key)!r}, model has {theirs.get(key)!r}"
                    for key in ("model_type", "hidden") if mine.get(key) != theirs.get(key)]
        for key in ("attention", "ffn"):
            a, b = mine.get(key, {}), theirs.get(key, {})
            for site in sorted(set(a) | set(b)):
                if a.get(site) != b.get(site):
                    problems.append(f"{key} {site}: plan has {a.get(site)}, model has {b.get(site)}")
        if mine.get("layers") != theirs.get("layers"):
            problems.append(f"layers: plan has {len(mine.get('layers', []))}, model has {len(theirs['layers'])}")
        shown = problems[:8] + ([f"... and {len(problems) - 8} more"] if len(problems) > 8 else [])
        raise PlanError("this pruning plan was made for a different model:\n"
                        + "\n".join(f"  - {p}" for p in shown)
                        + "\nReplay a plan on a fresh copy of the dense model it was made from.")

    def to_masks(self, structure: ModelStructure) -> Masks:
        """Binary masks for ``structure`` (after checking the fingerprint)."""
        self.check(structure)
        masks = Masks()
        sizes = {"heads": {s.name: s.num_heads for s in structure.attention},
                 "kv_groups": {s.name: s.num_kv_heads for s in structure.attention},
                 "neurons": {s.name: s.width for s in structure.ffn}}
        for kind, entries in self.keep.items():
            if kind == "hidden":
                masks.hidden = _mask(entries, structure.hidden.size, "hidden", "")
                continue
            for site, kept in entries.items():
                getattr(masks, kind)[site] = _mask(kept, sizes[kind][site], kind, site)
        for kind, names in self.removed.items():
            for name in names:
                getattr(masks, kind)[name] = torch.zeros(())
        masks.validate(structure)
        return masks

    def to_dict(self) -> dict:
        return {"format": FORMAT_VERSION, "base": self.base, "keep": self.keep,
                "removed": self.removed, "meta": self.meta}

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        if path.is_dir():
            path = path / PLAN_FILE
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PruningPlan":
        path = Path(path)
        if path.is_dir():
            path = path / PLAN_FILE
        if not path.exists():
            raise PlanError(f"no pruning plan at {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise PlanError(f"{path} is not a valid plan file: {err}") from None
        if data.get("format") != FORMAT_VERSION:
            raise PlanError(f"{path}: plan format {data.get('format')!r} is not supported "
                            f"(this lmprune reads format {FORMAT_VERSION})")
        return cls(data["base"], data.get("keep", {}), data.get("removed", {}), data.get("meta", {}))


def _kept(tensor: torch.Tensor) -> list[int]:
    return torch.nonzero(tensor.detach() != 0).flatten().tolist()


def _mask(kept: list[int], size: int, kind: str, site: str) -> torch.Tensor:
    bad = [i for i in kept if not 0 <= int(i) < size]
    if bad:
        raise PlanError(f"{kind} {site or ''}: kept indices {bad[:5]} out of range 0..{size - 1}")
    mask = torch.zeros(size)
    mask[list(kept)] = 1.0
    return mask


def apply_plan(model, plan: PruningPlan):
    """Replay ``plan`` on a dense ``model`` (in place) and return it."""
    from lmprune.structures.removal import remove

    structure = describe(model)
    return remove(model, plan.to_masks(structure), structure)
