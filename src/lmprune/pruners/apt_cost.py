"""The parameter count of APT's prunable body as a function of what is kept, and the budget
search that uses it when hidden channels are pruned too.

Pruning heads and neurons alone, a unit's cost is a constant and costs add up
(:func:`lmprune.pruners.apt_budget.select_within_budget`). A hidden channel is different:
it runs through every head and neuron, so what it costs depends on how many of them are
kept, and what a head costs depends on how many hidden channels are kept. The body is
*bilinear* in the counts (APT's ``compute_param``, ``utils/fisher_utils/efficiency/param.py``
in ROIM1998/APT)::

    P(h, n, d') = d' * (sum_i a_head_i h_i + sum_j a_neuron_j n_j + F) + sum_i b_head_i h_i
                  + sum_j b_neuron_j n_j

with ``h_i`` heads kept at attention site i, ``n_j`` neurons at FFN site j and ``d'`` hidden
channels; ``a`` counts a unit's parameters per hidden channel (a BERT head: ``4 * head_dim``,
its q/k/v rows and o columns; a neuron: 2, its up row and down column), ``b`` the rest (q/k/v
biases: ``3 * head_dim``; the up bias: 1), ``F`` the hidden-channel parameters no head or
neuron owns (norm weights and biases, the output projections' biases, the key/value rows of
grouped-query attention). Embeddings and task heads are not part of the body (APT's budget).

Adding units in density order, ``P`` of the prefix grows monotonically, so APT's search —
the longest prefix of the units sorted by salience / marginal cost whose ``P`` fits the
budget — is exact here: it never exceeds the budget and, unlike summing per-unit costs
measured on the dense model (which counts a kept head's parameters in pruned hidden
channels twice), it does not keep less than the budget allows. Marginal costs are taken at
the current (alive) counts, as APT's ``set_param_per_block`` does after each pruning.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmprune.arch import ModelStructure
from lmprune.arch.describe import get_module
from lmprune.errors import LmpruneError
from lmprune.pruners.apt_budget import _round_counts


@dataclass(frozen=True)
class CostModel:
    """Coefficients of ``P`` (module docstring), measured on the dense model, and its counts."""

    head_a: torch.Tensor  # [attention sites]
    head_b: torch.Tensor
    neuron_a: torch.Tensor  # [ffn sites]
    neuron_b: torch.Tensor
    fixed_a: float  # F
    heads: torch.Tensor  # dense counts per site
    neurons: torch.Tensor
    hidden: int  # dense hidden size

    @classmethod
    def of(cls, model: nn.Module, structure: ModelStructure) -> CostModel:
        def bias(path: str) -> int:
            return 1 if getattr(get_module(model, path), "bias", None) is not None else 0

        head_a, head_b, fixed = [], [], 0.0
        for s in structure.attention:
            rows = (s.q,) if s.group_size > 1 else (s.q, s.k, s.v)
            head_a.append(s.head_dim * (len(rows) + 1))
            head_b.append(s.head_dim * sum(bias(p) for p in rows))
            if s.group_size > 1:  # key/value rows belong to groups, never pruned alone
                fixed += 2 * s.head_dim * s.num_kv_heads
            fixed += bias(s.o)
        fixed += sum(bias(s.out) for s in structure.ffn)
        heads = set(structure.head_modules)
        for path in structure.hidden.norms:
            if not any(path == h or path.startswith(h + ".") for h in heads):
                norm = get_module(model, path)
                fixed += sum(1 for n in ("weight", "bias") if getattr(norm, n, None) is not None)
        f64 = torch.float64
        return cls(torch.tensor(head_a, dtype=f64), torch.tensor(head_b, dtype=f64),
                   torch.tensor([len(s.ins) + 1 for s in structure.ffn], dtype=f64),
                   torch.tensor([sum(bias(p) for p in s.ins) for s in structure.ffn], dtype=f64),
                   float(fixed),
                   torch.tensor([s.num_heads for s in structure.attention], dtype=f64),
                   torch.tensor([s.width for s in structure.ffn], dtype=f64),
                   structure.hidden.size)

    def total(self, heads: torch.Tensor | None = None, neurons: torch.Tensor | None = None,
              hidden: float | None = None) -> float:
        """``P`` for kept counts per site (``heads`` [attention sites], ``neurons`` [ffn
        sites]) and ``hidden`` kept channels; None: the dense count."""
        h, n, d = self._counts(heads, neurons, hidden)
        return d * (float(self.head_a @ h + self.neuron_a @ n) + self.fixed_a) + float(
            self.head_b @ h + self.neuron_b @ n)

    def unit_costs(self, heads: torch.Tensor | None = None, neurons: torch.Tensor | None = None,
                   hidden: float | None = None) -> dict[str, torch.Tensor | float]:
        """Marginal parameters of one more unit at these counts: ``heads`` / ``neurons`` per
        site ([sites]) and ``hidden`` (one channel); APT's ``param_per_block``."""
        h, n, d = self._counts(heads, neurons, hidden)
        return {"heads": self.head_a * d + self.head_b, "neurons": self.neuron_a * d + self.neuron_b,
                "hidden": float(self.head_a @ h + self.neuron_a @ n) + self.fixed_a}

    def _counts(self, heads, neurons, hidden):
        h = self.heads if heads is None else heads.to(torch.float64)
        n = self.neurons if neurons is None else neurons.to(torch.float64)
        return h, n, float(self.hidden if hidden is None else hidden)


def kept_counts(masks: dict[str, torch.Tensor]) -> dict:
    """``{"heads": [sites], "neurons": [sites], "hidden": float}`` of the non-zero entries of
    per-kind masks (heads / neurons ``[sites, units]``, hidden ``[d]``); kinds absent: None."""
    out = {"heads": None, "neurons": None, "hidden": None}
    for kind in ("heads", "neurons"):
        if masks.get(kind) is not None:
            out[kind] = (masks[kind] != 0).sum(1).to(torch.float64)
    if masks.get("hidden") is not None:
        out["hidden"] = float((masks["hidden"] != 0).sum())
    return out


def select_bilinear(saliences: dict[str, torch.Tensor], model: CostModel, budget: float,
                    available: dict[str, torch.Tensor], min_keep: int = 1
                    ) -> dict[str, torch.Tensor]:
    """Binary keep masks (shapes of ``saliences``: heads / neurons ``[sites, units]``, hidden
    ``[d]``) whose body ``P`` fits ``budget``.

    Mandatory first: the ``min_keep`` most salient available units per site (0: a site may
    lose every unit) and at least one hidden channel; then the longest prefix of the other
    available units in descending salience / marginal cost (costs at the counts of
    ``available``, :meth:`CostModel.unit_costs`). Units not ``available`` (pruned for good)
    are never kept; kinds absent from ``saliences`` count as fully kept.
    """
    kinds = [k for k in ("heads", "neurons", "hidden") if k in saliences]
    rows = {k: saliences[k].to(torch.float64).reshape(1 if k == "hidden" else
                                                     saliences[k].shape[0], -1) for k in kinds}
    alive = {k: available[k].to(torch.bool).reshape(rows[k].shape) for k in kinds}
    counts = kept_counts({k: alive[k] if k != "hidden" else alive[k].reshape(-1) for k in kinds})
    costs = model.unit_costs(**counts)
    mandatory = {}
    for k in kinds:
        need = max(1, min_keep) if k == "hidden" else min_keep
        ranked = torch.where(alive[k], rows[k], torch.tensor(-torch.inf, dtype=torch.float64))
        m = torch.zeros_like(alive[k])
        m.scatter_(1, ranked.argsort(dim=1, descending=True, stable=True)[:, :need], True)
        mandatory[k] = m & alive[k]
    density, code, site, unit = [], [], [], []
    for c, k in enumerate(("heads", "neurons", "hidden")):
        if k not in kinds:
            continue
        cost = torch.as_tensor(costs[k], dtype=torch.float64).reshape(-1, 1)
        s, u = (alive[k] & ~mandatory[k]).nonzero(as_tuple=True)
        density.append((rows[k] / cost.expand_as(rows[k]))[s, u])
        code.append(torch.full_like(s, c))
        site.append(s)
        unit.append(u)
    order = torch.argsort(torch.cat(density), descending=True, stable=True)
    code, site, unit = (torch.cat(x)[order] for x in (code, site, unit))
    prefix = _prefix_costs(model, mandatory, code, site)
    base = float(prefix[0])
    if base > budget:
        raise LmpruneError(f"the budget of {budget:.0f} parameters is below the {base:.0f} that "
                           f"keeping {min_keep} unit(s) per site costs; raise the budget "
                           f"(lower the sparsity) or keep fewer units per site")
    n = int(torch.searchsorted(prefix[1:], torch.tensor(budget, dtype=torch.float64),
                               right=True))
    keep = {k: v.clone() for k, v in mandatory.items()}
    for c, k in enumerate(("heads", "neurons", "hidden")):
        sel = code[:n] == c
        if k in keep and bool(sel.any()):
            keep[k][site[:n][sel], unit[:n][sel]] = True
    dtype = {k: saliences[k].dtype if saliences[k].is_floating_point() else torch.float32
             for k in kinds}
    return {k: keep[k].to(dtype[k]).reshape(saliences[k].shape) for k in kinds}


def _prefix_costs(model: CostModel, mandatory: dict, code: torch.Tensor, site: torch.Tensor
                  ) -> torch.Tensor:
    """``P`` of the mandatory units plus the first 0, 1, ..., N ranked units (N + 1 values)."""
    f64 = torch.float64
    h = mandatory["heads"].sum(1).to(f64) if "heads" in mandatory else model.heads
    n = mandatory["neurons"].sum(1).to(f64) if "neurons" in mandatory else model.neurons
    d0 = float(mandatory["hidden"].sum()) if "hidden" in mandatory else float(model.hidden)
    a = torch.zeros(len(code) + 1, dtype=f64)
    b = torch.zeros(len(code) + 1, dtype=f64)
    for c, (ta, tb) in enumerate(((model.head_a, model.head_b), (model.neuron_a, model.neuron_b))):
        sel = code == c
        a[1:][sel], b[1:][sel] = ta[site[sel]], tb[site[sel]]
    a[0] = float(model.head_a @ h + model.neuron_a @ n) + model.fixed_a
    b[0] = float(model.head_b @ h + model.neuron_b @ n)
    hidden = torch.cat([torch.zeros(1, dtype=f64), (code == 2).to(f64)])
    return (d0 + torch.cumsum(hidden, 0)) * torch.cumsum(a, 0) + torch.cumsum(b, 0)


def round_bilinear(keep: dict[str, torch.Tensor], saliences: dict[str, torch.Tensor],
                   model: CostModel, budget: float, available: dict[str, torch.Tensor],
                   round_to: dict[str, int], min_keep: int = 1) -> dict[str, torch.Tensor]:
    """Round the kept counts of ``keep`` (from :func:`select_bilinear`) per site to multiples
    of ``round_to[kind]``, by :func:`lmprune.pruners.apt_budget.select_within_budget`'s rule
    (down, then refilled with whole chunks that fit). The kept hidden channels stay as they
    are, so heads and neurons cost a constant each and the rule applies unchanged."""
    kinds = [k for k in ("heads", "neurons") if k in keep]
    counts = kept_counts(keep)
    d = counts["hidden"]
    costs = model.unit_costs(counts["heads"], counts["neurons"], d)
    d = float(model.hidden if d is None else d)
    fixed = model.total(*(counts[k] if k in keep else None for k in ("heads", "neurons")), d)
    fixed -= sum(float((costs[k] * counts[k]).sum()) for k in kinds)
    sal, cost, kept, order, widths = {}, {}, {}, {}, {}
    for k in kinds:
        alive = available[k].to(torch.bool)
        sal[k] = saliences[k].to(torch.float64)
        cost[k] = costs[k].reshape(-1, 1).expand_as(sal[k]).clone()
        kept[k] = keep[k] != 0
        ranked = torch.where(alive, sal[k], torch.tensor(-torch.inf, dtype=torch.float64))
        order[k] = ranked.argsort(dim=1, descending=True, stable=True)
        widths[k] = alive.sum(1).tolist()
    _round_counts(sal, cost, kept, order, budget - fixed, round_to, min_keep, widths)
    return {**keep, **{k: kept[k].to(keep[k].dtype) for k in kinds}}
