"""From per-unit scores to binary masks under a uniform per-site sparsity.

Every structure kind in ``structures`` is pruned at ``sparsity`` independently: each attention
site keeps the same fraction of its heads, each FFN site of its neurons, and so on (the
"uniform" layer-wise allocation LLM-Pruner uses). Sublayer and layer kinds remove the
``sparsity`` fraction of their lowest-scored sites. Higher score = more important.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from lmprune.arch import ModelStructure
from lmprune.errors import LmpruneError
from lmprune.structures import Masks
from lmprune.structures.alignment import rounding_for


@dataclass
class Scores:
    """One score per unit, keyed like :class:`Masks`."""

    heads: dict[str, torch.Tensor] = field(default_factory=dict)
    kv_groups: dict[str, torch.Tensor] = field(default_factory=dict)
    neurons: dict[str, torch.Tensor] = field(default_factory=dict)
    attention: dict[str, float] = field(default_factory=dict)
    ffn: dict[str, float] = field(default_factory=dict)
    layers: dict[str, float] = field(default_factory=dict)
    hidden: torch.Tensor | None = None


def keep_count(total: int, sparsity: float, round_to: int = 1) -> int:
    """Units to keep: ``(1 - sparsity) * total`` rounded to a multiple of ``round_to``.

    Never 0 (a site with no units left is a removed sublayer, which is its own kind) and never
    more than ``total``.
    """
    keep = (1.0 - sparsity) * total
    if round_to > 1 and total >= round_to:
        keep = round(keep / round_to) * round_to
        return int(min(total, max(round_to, keep)))
    return int(min(total, max(1, round(keep))))


def in_range(layer_name: str, layer_range: list[int] | None) -> bool:
    if layer_range is None:
        return True
    index = int(layer_name.rsplit(".", 1)[1])
    return layer_range[0] <= index < layer_range[1]


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    mask = torch.zeros_like(scores, dtype=torch.float32)
    mask[torch.topk(scores.float(), k).indices] = 1.0
    return mask


def select(structure: ModelStructure, scores: Scores, sparsity: float, structures: list[str],
           round_to: int | str = "auto", layer_range: list[int] | None = None) -> Masks:
    """Binary masks keeping the top-scored units of each requested kind."""
    if not 0.0 <= sparsity < 1.0:
        raise LmpruneError(f"sparsity must be in [0, 1), got {sparsity}")
    if layer_range is not None and not any(in_range(l.name, layer_range) for l in structure.layers):
        raise LmpruneError(f"layer_range {layer_range} selects none of the model's "
                           f"{len(structure.layers)} layers")
    masks = Masks()
    for site in structure.attention:
        if not in_range(site.layer, layer_range):
            continue
        if "heads" in structures:
            masks.heads[site.name] = _select_heads(site, scores.heads[site.name], sparsity,
                                                   round_to)
        if "kv_groups" in structures and site.group_size > 1:
            r = rounding_for(round_to, "kv_groups", site.num_kv_heads,
                             site.group_size * site.head_dim)
            k = keep_count(site.num_kv_heads, sparsity, r)
            masks.kv_groups[site.name] = _top(scores.kv_groups[site.name], k)
    for site in structure.ffn:
        if "neurons" in structures and in_range(site.layer, layer_range):
            k = keep_count(site.width, sparsity, rounding_for(round_to, "neurons", site.width))
            masks.neurons[site.name] = _top(scores.neurons[site.name], k)
    if "hidden" in structures:
        size = structure.hidden.size
        masks.hidden = _top(scores.hidden,
                            keep_count(size, sparsity, rounding_for(round_to, "hidden", size)))
    for kind, sites in (("attention", structure.attention), ("ffn", structure.ffn),
                        ("layers", structure.layers)):
        if kind in structures:
            getattr(masks, kind).update(_drop_lowest(
                {s.name: getattr(scores, kind)[s.name] for s in sites
                 if in_range(getattr(s, "layer", s.name), layer_range)}, sparsity))
    return masks


def _select_heads(site, scores: torch.Tensor, sparsity: float,
                  round_to: int | str = 1) -> torch.Tensor:
    """Multi-head: the top heads. Grouped-query: the same number of top query heads in every
    key/value group, which is what keeps the grouping valid after removal."""
    if site.group_size == 1:
        r = rounding_for(round_to, "heads", site.num_heads, site.head_dim)
        return _top(scores, keep_count(site.num_heads, sparsity, r))
    # per-group counts: one more head per group adds num_kv_heads * head_dim columns
    r = rounding_for(round_to, "heads", site.group_size, site.num_kv_heads * site.head_dim)
    per_group = keep_count(site.group_size, sparsity, r)
    return torch.cat([_top(group, per_group) for group in scores.view(site.num_kv_heads, site.group_size)])


def _drop_lowest(scores: dict[str, float], sparsity: float) -> dict[str, torch.Tensor]:
    count = math.floor(sparsity * len(scores) + 1e-9)
    order = sorted(scores, key=lambda name: float(scores[name]))
    dropped = set(order[:count])
    return {name: torch.tensor(0.0 if name in dropped else 1.0) for name in scores}
