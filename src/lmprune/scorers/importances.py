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
from lmprune.scorers.coupling import (Slice, aggregate, check_aggregation, check_reduction,
                                      to_channels)


class GroupImportances:
    """Per-group importances of one metric, tensor by tensor.

    Each coupled tensor contributes its per-index sums (:func:`~lmprune.scorers.coupling.
    index_sums`); contributions of the same tensor slice from several backward passes add up.
    ``signed`` sums (the vector metric, Σ g·w) get their |·| when the groups are formed.
    """

    def __init__(self) -> None:
        self._parts: dict[tuple[str, str], dict[tuple[int, int], torch.Tensor]] = {}
        self._pieces: dict[tuple[str, str, int, int], Slice] = {}
        self._signed: set[tuple[str, str]] = set()

    def add(self, order: int, position: int, piece: Slice, sums: torch.Tensor,
            signed: bool = False) -> None:
        """Record (or add to) the per-index ``sums`` of the tensor at ``order`` in parameter
        order; ``position`` orders several slices of one tensor (a pooler reads and writes)."""
        key = (piece.kind, piece.site)
        parts = self._parts.setdefault(key, {})
        values = sums.detach().double().cpu()
        if (order, position) in parts:
            parts[(order, position)] += values
        else:
            parts[(order, position)] = values.clone()
            self._pieces[(*key, order, position)] = piece
        if signed:
            self._signed.add(key)

    def aggregated(self, how: str, reduction: str = "channel") -> dict[tuple[str, str], torch.Tensor]:
        """(kind, site) -> the group importances combined over the coupled tensors.

        ``channel`` (LLM-Pruner): |·| per index for signed sums, fold onto the aligned
        channels, combine the tensors channel by channel, then sum each group's channels.
        ``group``: sum each tensor over the group's elements (|·| of that sum when signed),
        then combine the tensors group by group. Both agree for ``sum`` and ``mean`` on
        unsigned metrics.
        """
        check_aggregation(how)
        check_reduction(reduction)
        out = {}
        for key, parts in self._parts.items():
            signed = key in self._signed
            stack = []
            for order, position in sorted(parts):
                piece = self._pieces[(*key, order, position)]
                sums = parts[(order, position)]
                if reduction == "channel":
                    stack.append(to_channels(sums.abs() if signed else sums, piece))
                else:
                    per_group = to_channels(sums, piece).sum(1)
                    stack.append(per_group.abs() if signed else per_group)
            combined = aggregate(stack, how)
            out[key] = combined.sum(1) if reduction == "channel" else combined
            if how == "prod" and len(parts) > 1 and bool((out[key] == 0).all()):
                kind, site = key
                warnings.warn(f"aggregation 'prod' underflowed to 0 for every {kind} unit"
                              f"{' of ' + site if site else ''} ({len(parts)} tensors); their "
                              f"ranking is lost: use 'sum' or 'max'", stacklevel=3)
        return out

    def scores(self, structure: ModelStructure, how: str, reduction: str = "channel",
               finish: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Scores:
        """:class:`Scores` with every aggregated group (``finish`` maps the aggregated values,
        e.g. a p-th root for norms)."""
        scores = Scores()
        for (kind, site), values in self.aggregated(how, reduction).items():
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
