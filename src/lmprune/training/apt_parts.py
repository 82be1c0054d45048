"""Small pieces of APT's training method: all-keep masks, adapter importance, rank growth,
magnitude scores (``apt.salience=magnitude``)."""
from __future__ import annotations

import math

import torch
from torch import nn

from lmprune.arch import ModelStructure
from lmprune.scorers import apt_salience as sal
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


def adapter_importance(adapters: dict[str, APTLinear]) -> dict[str, float]:
    """Salience of each adapter's B: ``sum |B * dL/dB|`` (first-order Taylor, APT Sec. 4.3).
    One read from the device for all adapters (this runs after every step)."""
    with_grad = [(p, a) for p, a in adapters.items() if a.lora_B.grad is not None]
    values = _l1_of_products([a.lora_B.detach() for _, a in with_grad],
                             [a.lora_B.grad for _, a in with_grad])
    out = dict.fromkeys(adapters, 0.0)
    out.update(zip((p for p, _ in with_grad), values, strict=True))
    return out


def _l1_of_products(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> list[float]:
    """``sum |x * y|`` of each pair, read back at once; float32 tensors of one device go
    through PyTorch's fused multi-tensor kernels (a few launches instead of four per pair)."""
    if not xs:
        return []
    fused = len({(t.device, t.dtype) for t in xs + ys}) == 1 and xs[0].dtype == torch.float32
    if fused:
        norms = torch._foreach_norm(torch._foreach_mul(xs, ys), 1)
    else:
        norms = [(x * y).abs().sum().float() for x, y in zip(xs, ys, strict=True)]
    return torch.stack(norms).tolist()


def grow_ranks(adapters: dict[str, APTLinear], goal_params: float, max_rank: int,
               importance: dict[str, float] | None, generator: torch.Generator | None,
               dims: dict[str, tuple[int, int]] | None = None,
               columns: dict[str, torch.Tensor | None] | None = None) -> int:
    """Grow adapter ranks so their parameters approach ``goal_params``; returns rank units added.

    ``importance`` given (APT's adaptive tuning): only the most important half of the adapters
    grow; None: every adapter grows (the uniform replacement). Growing adapters get the same
    rank increase ``round(missing / sum(d_in + d_out))`` (at least 1), capped at ``max_rank``;
    growth keeps each adapter's function unchanged (new B columns are zero).

    ``dims`` (optional): each adapter's ``(d_in, d_out)`` counting alive units only (a model
    whose pruned units are masked counts what its compacted twin holds); default: the
    adapter's shapes. ``columns``: the alive input channels new rows of A are drawn over
    (:meth:`APTLinear.grow_rank`).
    """
    def size(p: str) -> tuple[int, int]:
        a = adapters[p]
        return dims[p] if dims is not None else (a.in_features, a.out_features)

    current = sum(adapters[p].rank * sum(size(p)) for p in adapters)
    missing = goal_params - current
    if missing <= 0:
        return 0
    paths = [p for p, a in adapters.items() if a.rank < max_rank]
    if importance is not None:
        paths.sort(key=lambda p: importance.get(p, 0.0), reverse=True)
        paths = paths[:max(1, math.ceil(len(paths) / 2))]
    if not paths:
        return 0
    width = sum(sum(size(p)) for p in paths)
    step = max(1, round(missing / width))
    added = 0
    for p in paths:
        a = adapters[p]
        new = min(max_rank, a.rank + step)
        if new > a.rank:
            added += new - a.rank
            a.grow_rank(new, generator, (columns or {}).get(p))
    return added


def equal_heads_per_group(keep: torch.Tensor, score: torch.Tensor, group_size: int,
                          alive: torch.Tensor | None = None) -> torch.Tensor:
    """Make a per-query-head keep mask valid for grouped-query attention.

    Removal needs the same number of query heads in every key/value group; this keeps
    ``m = floor(kept / groups)`` heads in each group (at least 1 while any head is kept),
    the highest-``score`` alive ones, so the kept count never grows (a budget that held still
    holds). ``groups`` counts the groups that still have an alive head (``alive``: the heads
    not pruned for good; default all). ``group_size`` 1: unchanged.
    """
    if group_size <= 1:
        return keep
    groups = keep.numel() // group_size
    live = torch.ones_like(keep, dtype=torch.bool) if alive is None else alive != 0
    live_groups = live.reshape(groups, group_size).any(1)
    kept = int(float((keep > 0).sum()))
    m = kept // max(1, int(live_groups.sum()))
    m = max(1, m) if kept else 0
    ranked_score = torch.where(live, score.to(torch.float64), torch.tensor(-torch.inf,
                                                                          dtype=torch.float64))
    ranked = ranked_score.reshape(groups, group_size).argsort(dim=1, descending=True, stable=True)
    out = torch.zeros(groups, group_size, dtype=keep.dtype, device=keep.device)
    out.scatter_(1, ranked[:, :m].to(keep.device), 1)
    out = out * live_groups[:, None].to(out)
    return out.reshape(-1)


def layer_modules(model: nn.Module, structure: ModelStructure) -> list[nn.Module]:
    """The transformer layer modules of ``model`` (``structure``: its ModelStructure)."""
    return [model.get_submodule(f"{layer.stack}.{layer.index}") for layer in structure.layers]


def magnitude_scores(model: nn.Module, space, hidden: bool) -> dict[str, torch.Tensor]:
    """L1 norms of each block's output-projection weights in the model's space; with
    pruned units masked, only alive hidden rows / alive input columns count."""
    structure = space.current
    live = space.collector_alive()
    rows = None if live is None or live.hidden is None else space.channels("hidden")

    def cut(w: torch.Tensor, cols: torch.Tensor | None = None) -> torch.Tensor:
        w = w.detach()
        if rows is not None:
            w = w[rows.to(w.device)]
        return w if cols is None else w[:, cols.to(w.device)]

    out = {}
    for s in structure.attention:
        cols = cut(model.get_submodule(s.o).weight).T.reshape(s.num_heads, s.head_dim, -1)
        out[f"heads/{s.name}"] = sal.magnitude_salience(cols)
    for s in structure.ffn:
        out[f"neurons/{s.name}"] = sal.magnitude_salience(cut(model.get_submodule(s.out).weight).T)
    if hidden:
        total = 0
        for s in structure.attention:
            cols = None if live is None else space.channels("heads", s.name, s.head_dim)
            w = model.get_submodule(s.o).weight.detach()
            w = w if cols is None else w[:, cols.to(w.device)]
            total = total + w.double().abs().sum(1)
        out["hidden"] = total
    return out
