"""Compaction during training: remove pruned units from a model that is being trained.

:func:`compact` is a deterministic function of the model, the binary keep masks and the
modules that follow the hidden size (APT's layer transformation): it removes what the masks
zero out with :func:`lmprune.structures.removal.remove` (adapters included: an ``APTLinear``
is cut with its base linear) and returns the :class:`~lmprune.structures.moves.ParamMoves`
that say which new parameter replaced which old one. :func:`carry_optimizer` then moves an
optimizer's state onto the new parameters, cut the same way (AdamW's moments of the kept
units are kept exactly; nothing is reset). Every process of a data-parallel run that applies
both to the same model, masks and optimizer gets the same result.

Gradients are not carried: compaction happens between optimizer steps, after
``zero_grad(set_to_none=True)``; a parameter that still holds a gradient is an error.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from lmprune.arch import ModelStructure, describe
from lmprune.errors import LmpruneError
from lmprune.structures.masks import Masks
from lmprune.structures.moves import ParamMoves
from lmprune.structures.removal import Slicer, remove


@torch.no_grad()
def compact(model: nn.Module, keep: Masks, structure: ModelStructure | None = None,
            followers: Iterable[nn.Module | None] = ()) -> ParamMoves:
    """Remove the units ``keep`` zeroes (binary masks over the model's current units; sites
    without a mask keep everything) from ``model`` in place, and the pruned hidden channels
    from ``followers`` (modules that define ``lmprune_slice``). Returns the moves."""
    structure = structure or describe(model)
    stale = [n for n, p in model.named_parameters() if p.grad is not None]
    if stale:
        raise LmpruneError(f"compaction runs between optimizer steps, with gradients cleared; "
                           f"{stale[0]} still holds one (call zero_grad(set_to_none=True))")
    moves = ParamMoves()
    remove(model, keep, structure, moves=moves)
    if keep.hidden is not None:
        kept = torch.nonzero(keep.hidden != 0).flatten().cpu()
        slicer = Slicer(moves)
        for module in followers:
            if module is not None:
                slicer.linear(module, rows=kept, cols=kept)
    return moves


def carry_optimizer(optimizer: torch.optim.Optimizer, moves: ParamMoves,
                    in_use: Iterable[nn.Parameter]) -> None:
    """In place: point ``optimizer``'s parameter groups at the parameters that replaced
    theirs, with their state cut the same way (:meth:`ParamMoves.carry_optimizer_state`).
    ``in_use``: the parameters that still exist (the model's and the followers'); any other
    (a removed sublayer's adapter) leaves the optimizer with its state."""
    successors = moves.successors()
    live = {id(p) for p in in_use}
    old_state = dict(optimizer.state)
    optimizer.state.clear()
    for group in optimizer.param_groups:
        group["params"] = [successors.get(id(p), p) for p in group["params"]
                           if id(p) in successors or id(p) in live]
    moves.carry_optimizer_state(old_state, optimizer)
    for group in optimizer.param_groups:  # untouched parameters keep their state as it is
        for p in group["params"]:
            if p not in optimizer.state and p in old_state:
                optimizer.state[p] = old_state[p]
