"""AdaPruner's pruning solution space and its importance-mixing formula.

AdaPruner (Kong et al., "Sample-aware Adaptive Structured Pruning for Large Language Models",
AAAI 2025) searches jointly over two subspaces:

1. **calibration data**: which ``num_samples`` windows of a candidate pool calibrate the
   gradient-based importance;
2. **importance metric**: a coarse-grained (vector-wise) and a fine-grained (element-wise)
   Taylor importance, each scaled by an estimation-metric alignment factor and mixed by
   balance coefficients α1, α2 ∈ [0, 1]::

       I(unit) = α1 · s1 · I_vector(unit) + α2 · s2 · I_fine(unit)          (mixed importance)

No public code exists; the choices made here (measured and argued in ``docs/adapruner.md``):

* **Alignment = the metric's own scale.** On SmolLM2-135M the coarse metric is orders of
  magnitude below the fine one, and the paper's fixed factor sets (1e5-1e7 for vector,
  1e-2/1e-3 for element1, 1e-4 for element2), read literally, multiply that gap to ~1e7 in
  favour of the coarse metric: every trial then ranks by the vector metric alone. So ``s`` is
  *measured*: each metric is divided by its mean over the scored units of each kind (heads,
  neurons, ...), which puts both on one scale (mean 1); ``adapruner.scales`` adds optional
  searched multipliers on top (``adapruner.align=false`` mixes the raw metrics, times those
  multipliers: the literal reading is ``align=false`` with the paper's sets).
* **Balance as one share.** ``select`` ranks units within a site (or by score per
  parameter), so only the ratio α1·s1 / (α2·s2) changes a decision. The search draws the fine
  metric's share ``balance`` = α2 / (α1 + α2) on a grid of ``1 / MIX_STEPS`` (0, 0.05, ...,
  1), with α1 = 1 - balance, α2 = balance. The space contains the pure coarse ranking
  (balance 0), the pure fine ranking (balance 1) and every mix between; two independent
  uniform α's would almost never produce either pure ranking and waste trials on (0, 0).
* **Sample choice**: ``num_samples`` categorical parameters ``sample_0 … sample_{n-1}``, each
  an index into the pool (categorical: pool order carries no meaning). Duplicates are
  *repaired*, not dropped: a repeated index moves to the next unused one (cyclically), so
  every trial calibrates on exactly ``num_samples`` distinct windows; the repaired subset,
  sorted, is what calibrates and what the gradient cache is keyed by.
* **Metric choice**: ``fine`` categorical over :data:`FINE_METRICS` when ``adapruner.fine ==
  "search"`` (otherwise fixed); ``scale_vector`` / ``scale_<fine>`` categorical over
  ``adapruner.scales`` when a metric lists more than one factor.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from lmprune.errors import LmpruneError
from lmprune.pruners.selection import Scores

COARSE = "vector"
FINE_METRICS = ("element1", "element2", "param_second")
MIX_STEPS = 20  # balance grid: 0, 1/20, ..., 1
UNIT_KINDS = ("heads", "kv_groups", "neurons")


@dataclass(frozen=True)
class Space:
    """What a trial may choose (from ``run.adapruner``) and what is fixed."""

    pool_size: int
    num_samples: int
    fine: str = "search"  # one of FINE_METRICS, or "search"
    scales: dict[str, list[float]] = field(default_factory=dict)
    search_samples: bool = True  # False: the first num_samples pool windows
    search_mix: bool = True  # False: balance 0.5 (equal weights of the aligned metrics)

    @classmethod
    def from_run(cls, run, pool_size: int) -> "Space":
        a = run.adapruner
        return cls(pool_size, run.data.num_samples, a.fine,
                   {k: [float(x) for x in v] for k, v in a.scales.items()},
                   a.search_samples, a.search_mix)


@dataclass(frozen=True)
class Candidate:
    """One point of the solution space (what one trial prunes with)."""

    samples: tuple[int, ...]  # sorted, distinct pool indices
    balance: float  # the fine metric's share α2 / (α1 + α2)
    fine: str  # one of FINE_METRICS
    scale_coarse: float = 1.0  # extra alignment multiplier of the vector metric
    scale_fine: float = 1.0  # extra alignment multiplier of the fine metric

    @property
    def alpha1(self) -> float:
        return 1.0 - self.balance

    @property
    def alpha2(self) -> float:
        return self.balance

    def as_dict(self) -> dict:
        out = asdict(self)
        out.update(samples=list(self.samples), alpha1=self.alpha1, alpha2=self.alpha2)
        return out


def repair_indices(raw: list[int], pool_size: int) -> tuple[int, ...]:
    """Distinct pool indices from ``raw``: a repeated index moves to the next unused one
    (cyclically); the result is sorted. Needs ``len(raw) <= pool_size``."""
    if len(raw) > pool_size:
        raise ValueError(f"cannot pick {len(raw)} distinct samples from a pool of {pool_size}")
    used: set[int] = set()
    for index in raw:
        while index in used:
            index = (index + 1) % pool_size
        used.add(index)
    return tuple(sorted(used))


def _factors(scales: dict[str, list[float]], metric: str) -> list[float]:
    factors = scales.get(metric) or [1.0]
    if any(f <= 0 for f in factors):
        raise LmpruneError(f"adapruner.scales.{metric} must hold positive numbers, got {factors}")
    return [float(f) for f in factors]


def suggest_candidate(trial, space: Space) -> Candidate:
    """Ask an optuna ``trial`` for one candidate (parameter names as in the module docstring)."""
    if space.search_samples:
        pool = list(range(space.pool_size))
        raw = [trial.suggest_categorical(f"sample_{j}", pool) for j in range(space.num_samples)]
    else:
        raw = list(range(space.num_samples))
    balance = (trial.suggest_int("balance_step", 0, MIX_STEPS) / MIX_STEPS
               if space.search_mix else 0.5)
    fine = space.fine
    if fine == "search":
        fine = trial.suggest_categorical("fine", list(FINE_METRICS))
    s1 = _choose(trial, f"scale_{COARSE}", _factors(space.scales, COARSE))
    s2 = _choose(trial, f"scale_{fine}", _factors(space.scales, fine))
    return Candidate(repair_indices(raw, space.pool_size), balance, fine, s1, s2)


def _choose(trial, name: str, factors: list[float]) -> float:
    return float(trial.suggest_categorical(name, factors)) if len(factors) > 1 else factors[0]


def candidate_from_params(params: dict, space: Space) -> Candidate:
    """Rebuild the candidate of a finished trial from its ``params`` (e.g. the best trial's)."""
    raw = ([int(params[f"sample_{j}"]) for j in range(space.num_samples)]
           if space.search_samples else list(range(space.num_samples)))
    fine = params.get("fine", space.fine)
    balance = params["balance_step"] / MIX_STEPS if space.search_mix else 0.5
    s1 = float(params.get(f"scale_{COARSE}", _factors(space.scales, COARSE)[0]))
    s2 = float(params.get(f"scale_{fine}", _factors(space.scales, fine)[0]))
    return Candidate(repair_indices(raw, space.pool_size), balance, fine, s1, s2)


def baseline_params(space: Space, balance: float, fine: str) -> dict:
    """optuna parameters of the candidate that calibrates on the first ``num_samples`` pool
    windows with a fixed mix (what a warm start enqueues)."""
    params: dict = {}
    if space.search_samples:
        params.update({f"sample_{j}": j for j in range(space.num_samples)})
    if space.search_mix:
        params["balance_step"] = round(balance * MIX_STEPS)
    if space.fine == "search":
        params["fine"] = fine
    for metric in (COARSE, fine):
        factors = _factors(space.scales, metric)
        if len(factors) > 1:
            params[f"scale_{metric}"] = 1.0 if 1.0 in factors else factors[0]
    return params


def alignment(scores: Scores) -> dict[str, float]:
    """Measured alignment factor per unit kind: 1 / the mean score over all its units."""
    out = {}
    for kind in UNIT_KINDS:
        values = [v.double() for v in getattr(scores, kind).values()]
        if values:
            mean = float(torch.cat(values).mean())
            out[kind] = 1.0 / mean if mean > 0 else 1.0
    if scores.hidden is not None:
        mean = float(scores.hidden.double().mean())
        out["hidden"] = 1.0 / mean if mean > 0 else 1.0
    return out


def mix_scores(coarse: Scores, fine: Scores, candidate: Candidate, align: bool = True) -> Scores:
    """α1·s1·I_vector + α2·s2·I_fine per unit (float64), s = measured alignment (``align``)
    times the candidate's extra factor."""
    a1 = alignment(coarse) if align else {}
    a2 = alignment(fine) if align else {}

    def weights(kind: str) -> tuple[float, float]:
        return (candidate.alpha1 * candidate.scale_coarse * a1.get(kind, 1.0),
                candidate.alpha2 * candidate.scale_fine * a2.get(kind, 1.0))

    mixed = Scores()
    for kind in UNIT_KINDS:
        w1, w2 = weights(kind)
        ours, theirs = getattr(coarse, kind), getattr(fine, kind)
        getattr(mixed, kind).update({site: w1 * ours[site].double() + w2 * theirs[site].double()
                                     for site in ours if site in theirs})
    if coarse.hidden is not None and fine.hidden is not None:
        w1, w2 = weights("hidden")
        mixed.hidden = w1 * coarse.hidden.double() + w2 * fine.hidden.double()
    return mixed


def consensus_scores(scores: list[Scores]) -> Scores:
    """The mean of several mixed importances, each first divided by its own mean per unit kind
    (so that a trial's balance and alignment factors do not weigh it more than another's):
    the ranking the best trials agree on, estimated from all their calibration samples."""
    if not scores:
        raise ValueError("consensus of no scores")
    out = Scores()
    factors = [alignment(s) for s in scores]
    for kind in UNIT_KINDS:
        tables = [getattr(s, kind) for s in scores]
        sites = set.intersection(*(set(t) for t in tables))
        getattr(out, kind).update({
            site: sum(f.get(kind, 1.0) * t[site].double() for f, t in zip(factors, tables))
            / len(tables) for site in tables[0] if site in sites})
    if all(s.hidden is not None for s in scores):
        out.hidden = sum(f.get("hidden", 1.0) * s.hidden.double()
                         for f, s in zip(factors, scores)) / len(scores)
    return out
