"""APT's budget search: keep the densest blocks whose parameter cost fits a budget.

APT (Zhao et al., ICML 2024, Sec. 4.1, "adaptive pruning"): every block (attention head,
FFN neuron, hidden channel) has a salience S and a parameter cost c; blocks are sorted by
salience density S / c (descending) and a binary search over the sorted prefix finds the
largest prefix whose summed cost is within the parameter budget (the budget counts the
prunable body only: no embeddings, task heads or adapters). Costs per unit for a
BERT-like layer of width d, n heads, FFN width d_ff and L layers: head 4·d²/n,
neuron 2·d, hidden channel L·(4·d + 2·d_ff) (``bert_like_costs``; ``model_costs`` measures
them on a model with ``lmprune.structures.counting``, biases and norms included).

Inputs are per kind (``"heads"``, ``"neurons"``, ``"hidden"``, ...): a salience tensor of
shape ``[sites, units]`` (a 1-D tensor is one site) and a cost that is a float, a
``[sites]`` tensor or a tensor of the salience's shape. Output: binary masks of the
salience shapes.

Guarantees: total kept cost <= budget; every site keeps at least ``min_keep`` units
(default 1; ``min_keep=0`` allows emptying a site); without rounding the kept set is
mandatory units + the longest density-sorted prefix of the rest that fits the budget
(optimal among such prefixes when saliences are >= 0, since costs are > 0).

Rounding (``round_to={kind: r}``): per site, the kept count is rounded *down* to a
multiple of r (a site kept at its whole dense width stays full even when that width is not a
multiple of r, while one that keeps all of the fewer units an earlier event left is rounded;
the minimum is ``min(width, r * ceil(min_keep / r))``), dropping the lowest-density kept
units; the freed budget is refilled greedily with whole chunks of the next r units of a
site (or the site's remaining units when that fills it), densest chunk first, skipping
chunks that do not fit. Counts stay multiples of r (or full) and the budget is respected.

Random replacement (``apt.salience=random``): :func:`proportional_random_salience` gives
saliences under which this search keeps a uniformly random set of blocks with the same
fraction of every kind (random scores ranked by density would favour the cheap kind: a
neuron costs far less than a head, so almost every head would go first).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from lmprune.arch import ModelStructure
from lmprune.errors import LmpruneError
from lmprune.structures.counting import head_cost, hidden_cost, neuron_cost


def bert_like_costs(hidden: int, heads: int, ffn: int, layers: int) -> dict[str, float]:
    """Parameters per unit in a BERT-like model, weights only (APT's cost model).

    head: 4·d²/n (its q, k, v rows and o columns); neuron: 2·d (one row in, one column
    out); hidden channel: L·(4·d + 2·d_ff) (q,k,v,o and both FFN matrices in every layer).
    """
    return {"heads": 4 * hidden * hidden / heads, "neurons": 2.0 * hidden,
            "hidden": float(layers * (4 * hidden + 2 * ffn))}


def model_costs(model: nn.Module, structure: ModelStructure) -> dict[str, torch.Tensor | float]:
    """Measured per-unit costs: ``heads`` [attention sites], ``neurons`` [ffn sites],
    ``hidden`` (float), from ``lmprune.structures.counting`` (biases and norms included)."""
    return {"heads": torch.tensor([float(head_cost(model, s)["head"]) for s in structure.attention]),
            "neurons": torch.tensor([float(neuron_cost(model, s)) for s in structure.ffn]),
            "hidden": float(hidden_cost(model, structure))}


def _as_2d(kind: str, salience: torch.Tensor, cost) -> tuple[torch.Tensor, torch.Tensor]:
    """Salience and per-unit cost as float64 ``[sites, units]`` tensors."""
    sal = salience.detach().to(torch.float64)
    sal = sal.reshape(1, -1) if sal.dim() == 1 else sal
    if sal.dim() != 2 or sal.numel() == 0:
        raise LmpruneError(f"salience of {kind!r} must be a non-empty 1-D or [sites, units] "
                           f"tensor, got shape {tuple(salience.shape)}")
    c = torch.as_tensor(cost, dtype=torch.float64)
    if c.numel() == 1:
        c = c.reshape(1, 1)
    elif c.dim() == 1 and c.numel() == sal.shape[0]:
        c = c[:, None]  # one cost per site
    elif c.numel() == sal.numel():
        c = c.reshape(sal.shape)  # one cost per unit
    else:
        raise LmpruneError(f"cost of {kind!r} (shape {tuple(c.shape)}) fits neither a scalar, "
                           f"one value per site nor one per unit of {tuple(sal.shape)}")
    c = torch.broadcast_to(c, sal.shape)
    if not torch.all(c > 0):
        raise LmpruneError(f"costs of {kind!r} must be > 0 parameters per unit")
    return sal, c.clone()


def proportional_random_salience(shapes: dict[str, tuple[int, ...]],
                                 costs: dict[str, torch.Tensor | float],
                                 generator: torch.Generator | None = None
                                 ) -> dict[str, torch.Tensor]:
    """Random saliences whose density ranking keeps every kind in proportion to its count.

    Each kind's units (over all its sites) are put in a uniformly random order; the unit at
    position ``j`` of ``N`` gets density ``1 - (j + 0.5) / N`` and salience ``density x
    cost``. Sorted by density, the kinds interleave in proportion to their counts, so the
    longest prefix that fits a budget keeps the same fraction of heads, of neurons and of
    hidden channels (within one unit per kind, plus the per-site minimum and the rounding of
    :func:`select_within_budget`), and which units of a kind are kept is uniformly random.
    ``shapes`` are the salience shapes (``[sites, units]`` or ``[units]``), ``costs`` as in
    :func:`select_within_budget`.
    """
    out = {}
    for kind in sorted(shapes):
        n = math.prod(shapes[kind])
        density = torch.empty(n, dtype=torch.float64)
        ranks = torch.arange(n, dtype=torch.float64)
        density[torch.randperm(n, generator=generator)] = 1.0 - (ranks + 0.5) / n
        density = density.reshape(shapes[kind])
        sal, cost = _as_2d(kind, density, costs[kind])
        out[kind] = (sal * cost).reshape(shapes[kind])
    return out


def _site_minimum(width: int, min_keep: int, r: int) -> int:
    return min(width, r * math.ceil(min_keep / r))


def select_within_budget(saliences: dict[str, torch.Tensor], costs: dict[str, torch.Tensor | float],
                         budget: float, round_to: dict[str, int] | None = None,
                         min_keep: int = 1) -> dict[str, torch.Tensor]:
    """Binary keep masks (shapes of ``saliences``) whose total cost is <= ``budget``.

    See the module docstring for the rule, the rounding rule and the guarantees. Raises
    ``LmpruneError`` when the mandatory units (``min_keep`` per site, rounded up) cost
    more than the budget.
    """
    round_to = round_to or {}
    if set(saliences) != set(costs):
        raise LmpruneError(f"saliences and costs must name the same kinds, got "
                           f"{sorted(saliences)} and {sorted(costs)}")
    kinds = sorted(saliences)
    sal, cost, keep = {}, {}, {}
    for kind in kinds:
        sal[kind], cost[kind] = _as_2d(kind, saliences[kind], costs[kind])
        if round_to.get(kind, 1) < 1:
            raise LmpruneError(f"round_to[{kind!r}] must be >= 1, got {round_to[kind]}")
    order = {k: torch.argsort(sal[k] / cost[k], dim=1, descending=True, stable=True) for k in kinds}
    mandatory = 0.0
    for kind in kinds:
        keep[kind] = torch.zeros_like(sal[kind], dtype=torch.bool)
        m = _site_minimum(sal[kind].shape[1], min_keep, round_to.get(kind, 1)) if min_keep > 0 else 0
        rows = torch.arange(sal[kind].shape[0])[:, None]
        keep[kind][rows, order[kind][:, :m]] = True
        mandatory += float(cost[kind][keep[kind]].sum())
    if mandatory > budget:
        raise LmpruneError(f"the budget of {budget:.0f} parameters is below the "
                           f"{mandatory:.0f} that keeping {min_keep} unit(s) per site costs; "
                           f"raise the budget (lower the sparsity) or pass min_keep=0")
    _fill_prefix(sal, cost, keep, budget - mandatory)
    if any(round_to.get(k, 1) > 1 for k in kinds):
        _round_counts(sal, cost, keep, order, budget, round_to, min_keep)
    return {k: keep[k].to(saliences[k].dtype if saliences[k].is_floating_point() else torch.float32)
            .reshape(saliences[k].shape) for k in kinds}


def _fill_prefix(sal, cost, keep, remaining: float) -> None:
    """Add the longest density-sorted prefix of the not-yet-kept units costing <= remaining."""
    dens, costs, where = [], [], []
    for kind in sorted(sal):
        free = ~keep[kind]
        idx = free.nonzero()
        dens.append((sal[kind] / cost[kind])[free])
        costs.append(cost[kind][free])
        where += [(kind, int(i), int(j)) for i, j in idx.tolist()]
    if not where:
        return
    dens, costs = torch.cat(dens), torch.cat(costs)
    ranked = torch.argsort(dens, descending=True, stable=True)
    total = torch.cumsum(costs[ranked], 0)
    # binary search: number of leading units whose cumulative cost fits
    n = int(torch.searchsorted(total, torch.tensor(remaining, dtype=total.dtype),
                               right=True))
    for r in ranked[:n].tolist():
        kind, i, j = where[r]
        keep[kind][i, j] = True


def _round_counts(sal, cost, keep, order, budget: float, round_to, min_keep: int,
                  widths: dict[str, list[int]] | None = None) -> None:
    """Round kept counts per site down to multiples of r, then refill with whole chunks.

    ``widths`` (optional): units available per site (default: all); ``order`` must then
    rank the unavailable units of a site after its available ones. A site that keeps its
    whole dense width stays full; one that keeps all of fewer available units (an earlier
    event pruned the rest) is rounded like any other: its width is what the model will have."""
    for kind, r in round_to.items():
        if r <= 1 or kind not in keep:
            continue
        dense = keep[kind].shape[1]
        for i in range(keep[kind].shape[0]):
            width = widths[kind][i] if widths else dense
            floor = _site_minimum(width, min_keep, r) if min_keep > 0 else 0
            count = int(keep[kind][i].sum())
            if count == width and (width == dense or width % r == 0):
                continue
            target = max(floor, (count // r) * r)
            keep[kind][i] = False
            keep[kind][i, order[kind][i, :target]] = True
    used = sum(float(cost[k][keep[k]].sum()) for k in keep)
    while True:
        best = None  # (density, kind, site, units)
        for kind, r in round_to.items():
            if r <= 1 or kind not in keep:
                continue
            dense = keep[kind].shape[1]
            for i in range(keep[kind].shape[0]):
                count = int(keep[kind][i].sum())
                width = widths[kind][i] if widths else dense
                end = count + r
                if end > width:  # a last partial chunk only where it fills the dense width
                    if width != dense:
                        continue
                    end = width
                units = order[kind][i, count:end]
                if len(units) == 0:
                    continue
                chunk_cost = float(cost[kind][i, units].sum())
                if used + chunk_cost > budget:
                    continue
                density = float(sal[kind][i, units].sum()) / chunk_cost
                if best is None or density > best[0]:
                    best = (density, kind, i, units, chunk_cost)
        if best is None:
            return
        _, kind, i, units, chunk_cost = best
        keep[kind][i, units] = True
        used += chunk_cost
