"""APT's choice of blocks at a pruning event (or at every step): salience per kind, the
budget search over the alive units, grouped-query fix-up, FFN width rounding.

Everything here works in the dense model's index space (:mod:`lmprune.training.apt_space`):
saliences are ``[sites, units]`` per kind (``hidden``: ``[d]``), units pruned for good are
not available, and the parameter cost is the exact body count of
:class:`lmprune.pruners.apt_cost.CostModel` (hidden channels included).
"""
from __future__ import annotations

import torch

from lmprune.arch import ModelStructure
from lmprune.errors import LmpruneError
from lmprune.pruners.apt_budget import proportional_random_salience
from lmprune.pruners.apt_cost import CostModel, kept_counts, round_bilinear, select_bilinear
from lmprune.structures.masks import Masks
from lmprune.training.apt_parts import equal_heads_per_group


def stacked(masks: Masks, kinds) -> dict[str, torch.Tensor]:
    """Per-kind dense-space tensors of ``masks`` (heads / neurons ``[sites, units]``)."""
    out = {}
    for kind in ("heads", "neurons"):
        if kind in kinds:
            out[kind] = torch.stack([m.detach().cpu() for m in getattr(masks, kind).values()])
    if "hidden" in kinds:
        out["hidden"] = masks.hidden.detach().cpu()
    return out


def ema_salience(values: dict[str, torch.Tensor], structure: ModelStructure, kinds
                 ) -> dict[str, torch.Tensor]:
    """The salience EMA per kind as ``[sites, units]`` (hidden: ``[d]``); missing: zero."""
    out = {}
    if "heads" in kinds:
        out["heads"] = torch.stack([values.get(f"heads/{s.name}", torch.zeros(s.num_heads))
                                    .double().cpu() for s in structure.attention])
    if "neurons" in kinds:
        out["neurons"] = torch.stack([values.get(f"neurons/{s.name}", torch.zeros(s.width))
                                      .double().cpu() for s in structure.ffn])
    if "hidden" in kinds:
        out["hidden"] = values.get("hidden", torch.zeros(structure.hidden.size)).double().cpu()
    return out


def random_densities(structure: ModelStructure, kinds, generator: torch.Generator
                     ) -> dict[str, torch.Tensor]:
    """``apt.salience=random``: one uniformly random density order per kind, drawn once per
    run, in which every kind's units interleave in proportion to their counts (see
    :func:`lmprune.pruners.apt_budget.proportional_random_salience`); the salience at an
    event is the density times the unit's cost then, so the budget search keeps the same
    fraction of every kind."""
    shapes = {"heads": (len(structure.attention), structure.attention[0].num_heads),
              "neurons": (len(structure.ffn), structure.ffn[0].width),
              "hidden": (structure.hidden.size,)}
    shapes = {k: shapes[k] for k in kinds}
    return proportional_random_salience(shapes, {k: 1.0 for k in shapes}, generator)


def times_cost(densities: dict[str, torch.Tensor], model: CostModel, alive: Masks
               ) -> dict[str, torch.Tensor]:
    """Salience = density x the unit's marginal cost at the alive counts."""
    costs = model.unit_costs(**kept_counts(stacked(alive, densities)))
    out = {}
    for kind, density in densities.items():
        cost = torch.as_tensor(costs[kind], dtype=torch.float64)
        out[kind] = density * (cost.reshape(-1, 1) if cost.dim() else cost)
    return out


def require_salience(saliences: dict[str, torch.Tensor], alive: dict[str, torch.Tensor],
                     structure: ModelStructure, step: int) -> None:
    """Raise when the alive units of a site all score zero: the search would keep them in
    index order, silently (what a frozen backbone without adapters before the site gives)."""
    names = {"heads": [s.name for s in structure.attention],
             "neurons": [s.name for s in structure.ffn], "hidden": ["the residual stream"]}
    for kind, values in saliences.items():
        rows = values.reshape(1, -1) if kind == "hidden" else values
        live = alive[kind].reshape(rows.shape) != 0
        for name, row, ok in zip(names[kind], rows, live, strict=True):
            if bool(ok.any()) and not torch.any(row[ok] != 0):
                raise LmpruneError(
                    f"APT salience of the {kind} of {name} is all zero at the pruning event "
                    f"of step {step}, so they would be pruned in index order; no gradient "
                    f"reached them: put adapters before them (apt.targets) or tune the "
                    f"backbone itself (apt.adapter=none)")


def choose(saliences: dict[str, torch.Tensor], model: CostModel, budget: float, alive: Masks,
           structure: ModelStructure, min_units: int, round_to: int = 1
           ) -> dict[str, torch.Tensor]:
    """The kept units (binary, per kind) within ``budget``: the bilinear budget search over
    the alive units, FFN widths rounded to ``round_to`` (when > 1), and the same number of
    query heads in every key/value group (the most salient alive ones)."""
    available = stacked(alive, saliences)
    keep = select_bilinear(saliences, model, budget, available, min_keep=min_units)
    if round_to > 1 and "neurons" in keep:
        keep = round_bilinear(keep, saliences, model, budget, available,
                              {"neurons": round_to}, min_keep=min_units)
    if "heads" in keep:
        rows = [equal_heads_per_group(keep["heads"][i], saliences["heads"][i], s.group_size,
                                      available["heads"][i])
                for i, s in enumerate(structure.attention)]
        keep["heads"] = torch.stack(rows)
    return keep


def write_targets(targets: Masks, keep: dict[str, torch.Tensor], structure: ModelStructure
                  ) -> None:
    """Copy ``keep`` (per kind, dense space) into the per-site ``targets``."""
    with torch.no_grad():
        if "heads" in keep:
            for i, s in enumerate(structure.attention):
                targets.heads[s.name].copy_(keep["heads"][i])
        if "neurons" in keep:
            for i, s in enumerate(structure.ffn):
                targets.neurons[s.name].copy_(keep["neurons"][i])
        if "hidden" in keep:
            targets.hidden.copy_(keep["hidden"].reshape(-1))
