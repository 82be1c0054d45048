"""Parameter budgets: ``prune.sparsity`` as the share of non-embedding parameters removed.

With ``prune.budget=params`` (the default) every score-based method removes
``prune.sparsity`` of the model's non-embedding ("body") parameters, within
:data:`TOLERANCE` (0.2 points) wherever the structure kinds allow it, so methods compare at
equal parameter counts. Two allocations of that budget over the sites:

* ``uniform`` (LLM-Pruner's local pruning): one per-unit sparsity ``s`` for every site of
  every kind, the largest whose removed share stays at or below the target (bisection),
  with LLM-Pruner's rounding of heads (``floor(s * heads)`` removed, see :func:`counts_at`);
  then a fine step on the finest kind (neurons, else hidden channels, else key/value
  groups or multi-head heads) removes whole further units (``prune.round_to`` blocks),
  spread evenly over the sites, so the share lands on the target. Sites then differ by at
  most one block. The counts depend only on the model's shapes, never on the scores, so
  every candidate of a search (AdaPruner's trials) prunes exactly as many units.
* ``global``: every unit of every site competes in one ranking by importance *per
  parameter* (score / parameters it frees: the greedy knapsack order) and the lowest go
  first until the target is met. A site keeps at least one unit (one ``round_to`` block of
  neurons); for grouped-query heads the unit is one query head in *every* key/value group
  (the layout stays valid), scored by the sum of those heads' scores.

Counts are exact: candidate masks are removed from a storage-free (meta-device) copy of the
model and its parameters counted, so tied weights, biases, grouped-query attention and hidden
channels need no separate formula. Whole sublayers and layers (``attention``, ``ffn``,
``layers``) are dropped lowest score first, as many as the target allows.
With ``prune.budget=units`` the earlier meaning holds: each site of each kind keeps
``round((1 - sparsity) * units)`` (``selection.keep_count``; LLM-Pruner instead keeps
``int((1 - s) * channels)`` channels and removes whole heads of what is left, i.e. it rounds
the kept heads up and the kept neurons down).
"""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from lmprune.arch import ModelStructure
from lmprune.errors import LmpruneError
from lmprune.pruners.selection import Scores, in_range, keep_count, select
from lmprune.structures import Masks, remove
from lmprune.structures.alignment import rounding_for
from lmprune.structures.counting import count_parameters

TOLERANCE = 0.002  # largest accepted |achieved - target| share of body parameters
UNIT_KINDS = ("heads", "kv_groups", "neurons", "hidden")
SITE_KINDS = ("attention", "ffn", "layers")
FINE_ORDER = ("neurons", "hidden", "kv_groups", "heads")
ALLOCATIONS = ("uniform", "global")


@dataclass
class BudgetOutcome:
    """What a parameter budget selected, and how close it came."""

    masks: Masks
    target: float  # share of body parameters to remove
    achieved: float  # share removed by ``masks``
    unit_sparsity: float | None = None  # uniform: the per-unit sparsity before the fine step
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"removed {self.achieved:.2%} of non-embedding parameters (target {self.target:.2%})"


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on the meta device (no storage)."""
    memo = {}
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) not in memo:
            empty = torch.empty_like(tensor, device="meta")
            memo[id(tensor)] = (nn.Parameter(empty, requires_grad=tensor.requires_grad)
                                if isinstance(tensor, nn.Parameter) else empty)
    return copy.deepcopy(model, memo)


class ShareCounter:
    """Removed share of body parameters for candidate masks, counted on a meta copy."""

    def __init__(self, model: nn.Module, structure: ModelStructure):
        self.structure = structure
        self.meta = meta_copy(model)
        self.body = count_parameters(self.meta, structure).body

    def __call__(self, masks: Masks) -> float:
        pruned = copy.deepcopy(self.meta)
        remove(pruned, masks, self.structure)
        return 1.0 - count_parameters(pruned).body / self.body


#: score-free results, keyed by the model's shapes and the budget (AdaPruner reuses them)
_CACHE: dict[tuple, object] = {}
_CACHE_SIZE = 32


def _cached(key: tuple, compute):
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = compute()
    return _CACHE[key]


def _shape_key(model: nn.Module) -> tuple:
    return tuple((name, tuple(p.shape)) for name, p in model.named_parameters())


def select_params(model: nn.Module, structure: ModelStructure, scores: Scores, target: float,
                  structures: list[str], round_to: int | str = 1,
                  layer_range: list[int] | None = None,
                  allocation: str = "uniform", head_rounding: str = "down") -> BudgetOutcome:
    """Masks removing ``target`` of the body parameters (see the module docstring)."""
    if not 0.0 <= target < 1.0:
        raise LmpruneError(f"prune.sparsity must be in [0, 1), got {target}")
    if allocation not in ALLOCATIONS:
        raise LmpruneError(f"unknown prune.allocation {allocation!r}; valid: uniform, global")
    key = (_shape_key(model), tuple(structures), round_to,
           tuple(layer_range) if layer_range else None, target, head_rounding)
    counter = _cached(("counter", key[0]), lambda: ShareCounter(model, structure))
    if any(k in SITE_KINDS for k in structures):
        outcome = _with_sites(counter, structure, scores, target, structures, round_to,
                              layer_range)
    elif allocation == "global":
        costs = _cached(("costs", *key), lambda: _unit_costs(counter, structure, structures,
                                                              round_to, layer_range))
        masks = _global_masks(structure, scores, structures, round_to, layer_range, costs,
                              target)
        outcome = BudgetOutcome(masks, target, counter(masks))
    else:
        counts = _cached(("counts", *key), lambda: _uniform_counts(
            counter, structure, structures, round_to, layer_range, target, head_rounding))
        masks = masks_from_counts(structure, scores, counts.counts, round_to)
        outcome = BudgetOutcome(masks, target, counts.achieved, counts.unit_sparsity)
    if abs(outcome.achieved - target) > TOLERANCE:
        note = (f"prune.budget=params: {outcome.describe()}; the structure kinds "
                f"{list(structures)} cannot come closer (their units are too coarse)")
        outcome.notes.append(note)
        warnings.warn(note, stacklevel=2)
    return outcome


# ---------------------------------------------------------------------------- uniform

@dataclass
class UnitCounts:
    """Units removed per site of each kind (score-free), and the share they remove."""

    counts: dict[str, dict[str, int]]  # kind -> site -> removed units ("" for hidden)
    achieved: float
    unit_sparsity: float


def _ranked(n: int) -> torch.Tensor:
    """Scores under which unit 0 goes first: removal order for count-only decisions."""
    return torch.arange(n, dtype=torch.float64)


def _dummy_scores(structure: ModelStructure) -> Scores:
    scores = Scores(hidden=_ranked(structure.hidden.size))
    for site in structure.attention:
        scores.heads[site.name] = _ranked(site.num_heads)
        scores.kv_groups[site.name] = _ranked(site.num_kv_heads)
    for site in structure.ffn:
        scores.neurons[site.name] = _ranked(site.width)
    return scores


def counts_at(structure: ModelStructure, s: float, structures, round_to: int | str = 1,
              layer_range: list[int] | None = None,
              head_rounding: str = "down") -> dict[str, dict[str, int]]:
    """Units each site removes at per-unit sparsity ``s``. Heads with ``head_rounding="down"``
    (LLM-Pruner's rounding): a site removes ``floor(s * heads)`` heads (grouped-query:
    ``floor(s * group_size)`` query heads per group; key/value groups ``floor(s * groups)``),
    never rounding a head budget up; ``"nearest"`` keeps ``round((1 - s) * heads)`` as
    ``prune.budget=units`` does. Neurons and
    hidden channels keep ``round((1 - s) * width)`` (``selection.keep_count``; a multiple of
    ``round_to``). At least one unit stays."""
    def gone(units: int) -> int:
        if head_rounding == "down":
            return min(units - 1, math.floor(s * units + 1e-9))
        return units - keep_count(units, s)

    counts: dict[str, dict[str, int]] = {k: {} for k in ("heads", "kv_groups", "neurons", "hidden")}
    for site in structure.attention:
        if not in_range(site.layer, layer_range):
            continue
        if "heads" in structures:
            per = site.group_size if site.group_size > 1 else site.num_heads
            counts["heads"][site.name] = gone(per) * (site.num_kv_heads if site.group_size > 1
                                                      else 1)
        if "kv_groups" in structures and site.group_size > 1:
            counts["kv_groups"][site.name] = gone(site.num_kv_heads)
    for site in structure.ffn:
        if "neurons" in structures and in_range(site.layer, layer_range):
            counts["neurons"][site.name] = site.width - keep_count(
                site.width, s, _multiple(round_to, "neurons", site.width))
    if "hidden" in structures:
        size = structure.hidden.size
        counts["hidden"][""] = size - keep_count(size, s, _multiple(round_to, "hidden", size))
    return counts


def _multiple(round_to: int | str, kind: str, width: int) -> int:
    """The multiple a site's kept ``kind`` units round to (``auto``: per width, see
    :mod:`lmprune.structures.alignment`)."""
    return rounding_for(round_to, kind, width)


def _block(round_to: int | str, kind: str, width: int) -> int:
    """Units removed together by a fine step: one rounding multiple (neurons, hidden)."""
    if kind not in ("neurons", "hidden"):
        return 1
    step = _multiple(round_to, kind, width)
    return step if width >= step else 1


def _uniform_counts(counter, structure, structures, round_to, layer_range, target,
                    head_rounding) -> UnitCounts:
    dummy = _dummy_scores(structure)

    def at(s: float) -> Masks:
        return masks_from_counts(structure, dummy, counts_at(structure, s, structures, round_to,
                                                             layer_range, head_rounding),
                                 round_to)

    lo, hi = 0.0, 1.0 - 1e-9
    if counter(at(hi)) <= target:
        lo = hi
    for _ in range(30):  # the largest s whose share stays at or below the target
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if counter(at(mid)) <= target else (lo, mid)
    counts = counts_at(structure, lo, structures, round_to, layer_range, head_rounding)
    fine = next((k for k in FINE_ORDER if k in structures and counts.get(k)), None)
    if fine is not None:
        counts = _fine_step(counter, structure, dummy, counts, fine, round_to, target)
    return UnitCounts(counts, counter(masks_from_counts(structure, dummy, counts, round_to)), lo)


def _fine_step(counter, structure, dummy, counts, kind, round_to, target):
    """Whole further blocks of ``kind``, spread evenly over its sites, to land on target."""
    sizes = _unit_sizes(structure, kind)
    block = {s: _block(round_to, kind, sizes[s]) for s in counts[kind]}
    if kind == "heads":  # only multi-head sites take single heads
        block = {s: b for s, b in block.items() if _site(structure, s).group_size == 1}

    def masks_for(extra: int) -> Masks:
        return masks_from_counts(structure, dummy, _spread(counts, kind, block, sizes, extra),
                                 round_to)

    share, best, best_gap = counter(masks_for(0)), 0, math.inf
    step = counter(masks_for(1)) - share if block else 0.0
    if step <= 0:
        return counts
    guess = max(0, round((target - share) / step))
    for extra in range(max(0, guess - 2), guess + 3):
        gap = abs(counter(masks_for(extra)) - target)
        if gap < best_gap:
            best, best_gap = extra, gap
    return _spread(counts, kind, block, sizes, best)


def _spread(counts, kind, block, sizes, extra: int):
    """``counts`` with ``extra`` more blocks of ``kind``, site i getting its share of them
    (``extra * (i + 1) // S - extra * i // S``), never leaving a site without a block."""
    out = {k: dict(v) for k, v in counts.items()}
    sites = list(block)
    for i, site in enumerate(sites):
        more = extra * (i + 1) // len(sites) - extra * i // len(sites)
        limit = sizes[site] - block[site]
        out[kind][site] = min(limit, out[kind][site] + more * block[site])
    return out


def _unit_sizes(structure, kind) -> dict[str, int]:
    if kind == "neurons":
        return {s.name: s.width for s in structure.ffn}
    if kind == "hidden":
        return {"": structure.hidden.size}
    if kind == "kv_groups":
        return {s.name: s.num_kv_heads for s in structure.attention}
    return {s.name: s.num_heads for s in structure.attention}


def _site(structure, name):
    return next(s for s in (*structure.attention, *structure.ffn) if s.name == name)


def masks_from_counts(structure: ModelStructure, scores: Scores,
                      counts: dict[str, dict[str, int]], round_to: int = 1) -> Masks:
    """Binary masks removing, per site, the ``counts[kind][site]`` lowest-scored units
    (grouped-query heads: the same number in every key/value group)."""
    masks = Masks()
    for kind in ("heads", "kv_groups", "neurons"):
        for name, removed in counts.get(kind, {}).items():
            values = getattr(scores, kind)[name].double()
            mask = torch.ones(len(values))
            site = _site(structure, name)
            if kind == "heads" and site.group_size > 1:
                per_group = removed // site.num_kv_heads
                groups = values.view(site.num_kv_heads, site.group_size)
                low = groups.argsort(dim=1, stable=True)[:, :per_group]
                mask.view(site.num_kv_heads, site.group_size).scatter_(1, low, 0.0)
            else:
                mask[values.argsort(stable=True)[:removed]] = 0.0
            getattr(masks, kind)[name] = mask
    if counts.get("hidden"):
        mask = torch.ones(len(scores.hidden))
        mask[scores.hidden.double().argsort(stable=True)[:counts["hidden"][""]]] = 0.0
        masks.hidden = mask
    return masks


# ---------------------------------------------------------------------------- global

def _unit_costs(counter, structure, structures, round_to, layer_range) -> dict:
    """(kind, site) -> (share one unit frees, units per unit, most removable units)."""
    dummy = _dummy_scores(structure)
    none = {k: {} for k in ("heads", "kv_groups", "neurons", "hidden")}
    start = masks_from_counts(structure, dummy, none)
    base = counter(start)
    costs = {}
    for site in structure.attention:
        if not in_range(site.layer, layer_range):
            continue
        if "heads" in structures:  # one query head per key/value group
            counts = {**none, "heads": {site.name: site.num_kv_heads}}
            share = counter(masks_from_counts(structure, dummy, counts)) - base
            costs[("heads", site.name)] = (share, site.num_kv_heads, site.group_size - 1)
        if "kv_groups" in structures and site.group_size > 1:
            counts = {**none, "kv_groups": {site.name: 1}}
            share = counter(masks_from_counts(structure, dummy, counts)) - base
            costs[("kv_groups", site.name)] = (share, 1, site.num_kv_heads - 1)
    for site in structure.ffn:
        if "neurons" in structures and in_range(site.layer, layer_range):
            block = _block(round_to, "neurons", site.width)
            counts = {**none, "neurons": {site.name: block}}
            share = counter(masks_from_counts(structure, dummy, counts, round_to)) - base
            costs[("neurons", site.name)] = (share, block, site.width // block - 1)
    return costs


def _global_masks(structure, scores, structures, round_to, layer_range, costs, target) -> Masks:
    """Lowest importance per parameter first until ``target`` (module docstring)."""
    candidates = []
    for (kind, name), (share, per, limit) in costs.items():
        values = getattr(scores, kind)[name].double()
        if kind == "heads":
            site = _site(structure, name)
            slots = values.view(site.num_kv_heads, site.group_size).sort(dim=1).values.sum(0)
        else:
            ordered = values.sort().values
            slots = ordered[:len(ordered) // per * per].view(-1, per).sum(1)
        candidates += [(float(v) / max(share, 1e-12), share, (kind, name))
                       for v in slots[:limit]]
    candidates.sort(key=lambda c: c[0])
    removed = {key: 0 for key in costs}
    total = 0.0
    for _, share, key in candidates:
        if total >= target:
            break
        if total + share > target + TOLERANCE / 2:
            continue  # a coarse unit that would overshoot: smaller ones fill the rest
        removed[key] += 1
        total += share
    counts = {k: {} for k in ("heads", "kv_groups", "neurons", "hidden")}
    for (kind, name), units in removed.items():
        counts[kind][name] = units * costs[(kind, name)][1]
    return masks_from_counts(structure, scores, counts, round_to)


# ---------------------------------------------------------------------------- sublayers

def _with_sites(counter, structure, scores, target, structures, round_to, layer_range):
    """Kinds that drop whole sites: the largest uniform sparsity at or below the target
    (the sites dropped depend on the scores, so nothing is cached)."""
    def at(s: float) -> Masks:
        return select(structure, scores, s, list(structures), round_to, layer_range)

    lo, hi = 0.0, 1.0 - 1e-9
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if counter(at(mid)) <= target + TOLERANCE / 2 else (lo, mid)
    masks = at(lo)
    return BudgetOutcome(masks, target, counter(masks), lo)
