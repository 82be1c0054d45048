"""Small pieces of APT's training method: hidden-channel cost, adapter importance, rank growth."""
from __future__ import annotations

import math

import torch
from torch import nn

from lmprune.arch import ModelStructure
from lmprune.structures.masks import Masks
from lmprune.tuners.apt_adapter import APTLinear


def ones_on(structure: ModelStructure, kinds: tuple[str, ...], device) -> Masks:
    """All-keep masks of ``kinds`` on ``device`` (float32)."""
    masks = Masks.ones(structure, kinds=kinds)
    for kind in ("heads", "kv_groups", "neurons", "attention", "ffn", "layers"):
        table = getattr(masks, kind)
        for site in table:
            table[site] = table[site].to(device)
    if masks.hidden is not None:
        masks.hidden = masks.hidden.to(device)
    return masks


def body_hidden_cost(model: nn.Module, structure: ModelStructure) -> int:
    """Parameters of the transformer body that one hidden (residual) channel holds.

    APT's cost of a hidden channel, ``L * (4d + 2 d_ff)`` for BERT, measured on the model:
    one input column of every q/k/v and FFN input projection, one output row (with its bias
    entry) of every attention and FFN output projection. Embeddings and task heads are left out
    (APT's budget counts the prunable body only), and so are norm entries (2 per norm).
    """
    get = model.get_submodule
    total = 0
    for site in structure.attention:
        total += sum(get(p).out_features for p in (site.q, site.k, site.v))
        total += get(site.o).in_features + (1 if get(site.o).bias is not None else 0)
    for site in structure.ffn:
        total += sum(get(p).out_features for p in site.ins)
        total += get(site.out).in_features + (1 if get(site.out).bias is not None else 0)
    return total


def adapter_importance(adapters: dict[str, APTLinear]) -> dict[str, float]:
    """Salience of each adapter's B: ``sum |B * dL/dB|`` (first-order Taylor, APT Sec. 4.3)."""
    out = {}
    for path, a in adapters.items():
        grad = a.lora_B.grad
        out[path] = 0.0 if grad is None else float((a.lora_B.detach() * grad).abs().sum())
    return out


def grow_ranks(adapters: dict[str, APTLinear], goal_params: float, max_rank: int,
               importance: dict[str, float] | None, generator: torch.Generator | None) -> int:
    """Grow adapter ranks so their parameters approach ``goal_params``; returns rank units added.

    ``importance`` given (APT's adaptive tuning): only the most important half of the adapters
    grow; None: every adapter grows (the uniform replacement). Growing adapters get the same
    rank increase ``ceil(missing / sum(d_in + d_out))``, capped at ``max_rank``; growth keeps
    each adapter's function unchanged (new B columns are zero).
    """
    current = sum(a.lora_A.numel() + a.lora_B.numel() for a in adapters.values())
    missing = goal_params - current
    if missing <= 0:
        return 0
    paths = [p for p, a in adapters.items() if a.rank < max_rank]
    if importance is not None:
        paths.sort(key=lambda p: importance.get(p, 0.0), reverse=True)
        paths = paths[:max(1, math.ceil(len(paths) / 2))]
    if not paths:
        return 0
    width = sum(adapters[p].in_features + adapters[p].out_features for p in paths)
    step = max(1, round(missing / width))
    added = 0
    for p in paths:
        a = adapters[p]
        new = min(max_rank, a.rank + step)
        if new > a.rank:
            added += new - a.rank
            a.grow_rank(new, generator)
    return added


def equal_heads_per_group(keep: torch.Tensor, score: torch.Tensor, group_size: int
                          ) -> torch.Tensor:
    """Make a per-query-head keep mask valid for grouped-query attention.

    Removal needs the same number of query heads in every key/value group; this keeps
    ``m = max(1, floor(kept / groups))`` heads in each group, the highest-``score`` ones, so
    the kept count never grows (a budget that held still holds). ``group_size`` 1: unchanged.
    """
    if group_size <= 1:
        return keep
    groups = keep.numel() // group_size
    m = max(1, int(float((keep > 0).sum())) // groups)
    ranked = score.reshape(groups, group_size).argsort(dim=1, descending=True, stable=True)
    out = torch.zeros(groups, group_size, dtype=keep.dtype, device=keep.device)
    out.scatter_(1, ranked[:, :m].to(keep.device), 1)
    return out.reshape(-1)
