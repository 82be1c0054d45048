"""Weight-magnitude importance: the Lp norm of each group's weights.

The norm is taken over all of a group's elements in all of its coupled tensors
(:mod:`lmprune.scorers.coupling`): ``(Σ_tensors Σ_elements |w|^p)^(1/p)``. This ranks groups
exactly like LLM-Pruner's ``l1``/``l2`` baselines (``Σ |w|^p`` per tensor, summed over the
group's tensors). No data is needed.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from lmprune.arch import ModelStructure
from lmprune.errors import LmpruneError
from lmprune.pruners.selection import Scores
from lmprune.scorers.coupling import ALL_KINDS, coupled_tensors, index_sums
from lmprune.scorers.importances import GroupImportances


@torch.no_grad()
def magnitude_scores(model: nn.Module, structure: ModelStructure, norm: int = 2,
                     kinds: Iterable[str] = ALL_KINDS,
                     layer_range: list[int] | None = None) -> Scores:
    """Lp norm (``norm`` = 1 or 2) of every group of ``kinds``; higher = more important."""
    if norm not in (1, 2):
        raise LmpruneError(f"magnitude norm must be 1 or 2, got {norm}")
    collected = GroupImportances()
    for index, tensor in enumerate(coupled_tensors(model, structure, kinds, layer_range)):
        powered = tensor.param.detach().float().abs().pow(norm)
        cache: dict[int, torch.Tensor] = {}
        for position, piece in enumerate(tensor.slices):
            collected.add(index, position, piece, index_sums(powered, piece, cache))
    return collected.scores(structure, "sum", finish=lambda v: v.pow(1.0 / norm))
