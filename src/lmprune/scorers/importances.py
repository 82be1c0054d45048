"""Collect per-tensor group importances and aggregate them into :class:`Scores`.

Scorers visit tensors one at a time (gradient hooks fire in backward order, i.e. last layer
first), so each tensor's contribution is stored with its position in parameter order and the
aggregation over a group's coupled tensors happens once every tensor has been seen.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from lmprune.arch import ModelStructure
from lmprune.pruners.selection import Scores
from lmprune.scorers.coupling import Slice, aggregate, check_aggregation


class GroupImportances:
    """Per-group importances of one metric, tensor by tensor."""

    def __init__(self) -> None:
        self._parts: dict[tuple[str, str], list[tuple[int, int, torch.Tensor]]] = {}

    def add(self, order: int, position: int, piece: Slice, values: torch.Tensor) -> None:
        """Record ``values`` (one per group) of the tensor at ``order`` in parameter order;
        ``position`` orders several slices of one tensor (a pooler both reads and writes)."""
        self._parts.setdefault((piece.kind, piece.site), []).append(
            (order, position, values.detach().double().cpu()))

    def aggregated(self, how: str) -> dict[tuple[str, str], torch.Tensor]:
        """(kind, site) -> the group importances combined over the coupled tensors."""
        check_aggregation(how)
        out = {}
        for key, parts in self._parts.items():
            parts = sorted(parts, key=lambda item: item[:2])
            out[key] = aggregate([values for _, _, values in parts], how)
            if how == "prod" and len(parts) > 1 and bool((out[key] == 0).all()):
                kind, site = key
                warnings.warn(f"aggregation 'prod' underflowed to 0 for every {kind} unit"
                              f"{' of ' + site if site else ''} ({len(parts)} tensors); their "
                              f"ranking is lost: use 'sum' or 'max'", stacklevel=3)
        return out

    def scores(self, structure: ModelStructure, how: str,
               finish: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Scores:
        """:class:`Scores` with every aggregated group (``finish`` maps the aggregated values,
        e.g. a p-th root for norms)."""
        scores = Scores()
        for (kind, site), values in self.aggregated(how).items():
            if finish is not None:
                values = finish(values)
            if kind == "hidden":
                scores.hidden = values
            elif kind in ("attention", "ffn", "layers"):
                getattr(scores, kind)[site] = float(values.reshape(()))
            else:
                getattr(scores, kind)[site] = values
        return _in_structure_order(structure, scores)


def _in_structure_order(structure: ModelStructure, scores: Scores) -> Scores:
    """Re-key every dict in the order of the model's sites (stable, readable output)."""
    order = [s.name for s in structure.attention] + [s.name for s in structure.ffn] + \
        [s.name for s in structure.layers]
    rank = {name: i for i, name in enumerate(order)}
    for kind in ("heads", "kv_groups", "neurons", "attention", "ffn", "layers"):
        table = getattr(scores, kind)
        setattr(scores, kind, {k: table[k] for k in sorted(table, key=lambda k: rank.get(k, 0))})
    return scores
