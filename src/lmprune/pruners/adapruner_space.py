"""AdaPruner's pruning solution space and its importance-mixing formula.

AdaPruner (Kong et al., "Sample-aware Adaptive Structured Pruning for Large Language Models",
AAAI 2025) searches jointly over two subspaces:

1. **calibration data**: which ``num_samples`` windows of a candidate pool calibrate the
   gradient-based importance;
2. **importance metric**: a coarse-grained (vector-wise) and a fine-grained (element-wise,
   first or second order) Taylor importance, each scaled by an estimation-metric alignment
   factor and mixed by balance coefficients α1, α2 ∈ [0, 1]::

       I(unit) = α1 · s1 · I_vector(unit) + α2 · s2 · I_fine(unit)          (mixed importance)

No public code exists; the choices made here (documented in ``docs/adapruner.md``):

* **Sample choice**: ``num_samples`` categorical parameters ``sample_0 … sample_{n-1}``, each
  an index into the pool. Categorical, not integer, because pool order carries no meaning
  (an integer parameter would let TPE smooth between neighbouring, unrelated windows).
  Duplicates are *repaired*, not dropped: a repeated index moves to the next unused index
  (cyclically), so every trial calibrates on exactly ``num_samples`` distinct windows, which
  keeps trials comparable. The repaired subset, sorted, is what calibrates and what the
  gradient cache is keyed by.
* **Metric choice**: ``alpha1``, ``alpha2`` floats in [0, 1]; ``fine`` categorical over
  {element1, element2} when ``adapruner.fine == "search"`` (otherwise fixed, not a
  parameter); ``scale_vector`` and ``scale_<fine>`` categorical over ``adapruner.scales``.
  ``scale_<fine>`` is conditional on ``fine`` (a dynamic search space: the sampler is
  created with ``group=True``).
* **No normalization** beyond the alignment factors: they *are* the paper's normalization
  (the raw metrics differ by orders of magnitude). Since ``select`` keeps the top units per
  site, only the ratio α1·s1 / (α2·s2) changes a decision; a common factor does not.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from lmprune.pruners.selection import Scores

COARSE = "vector"
FINE_METRICS = ("element1", "element2")


@dataclass(frozen=True)
class Candidate:
    """One point of the solution space (what one trial prunes with)."""

    samples: tuple[int, ...]  # sorted, distinct pool indices
    alpha1: float  # balance coefficient of the coarse (vector-wise) metric
    alpha2: float  # balance coefficient of the fine (element-wise) metric
    fine: str  # "element1" or "element2"
    scale_coarse: float  # alignment factor s1 of the vector-wise metric
    scale_fine: float  # alignment factor s2 of the fine metric

    def as_dict(self) -> dict:
        out = asdict(self)
        out["samples"] = list(self.samples)
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


def suggest_candidate(trial, pool_size: int, num_samples: int, fine: str,
                      scales: dict[str, list[float]]) -> Candidate:
    """Ask an optuna ``trial`` for one candidate (parameter names as in the module docstring).

    ``fine`` is ``"element1"``, ``"element2"`` or ``"search"``; ``scales`` maps a metric name
    to its candidate alignment factors (``run.adapruner.scales``).
    """
    pool = list(range(pool_size))
    raw = [trial.suggest_categorical(f"sample_{j}", pool) for j in range(num_samples)]
    alpha1 = trial.suggest_float("alpha1", 0.0, 1.0)
    alpha2 = trial.suggest_float("alpha2", 0.0, 1.0)
    if fine == "search":
        fine = trial.suggest_categorical("fine", list(FINE_METRICS))
    s1 = trial.suggest_categorical(f"scale_{COARSE}", _factors(scales, COARSE))
    s2 = trial.suggest_categorical(f"scale_{fine}", _factors(scales, fine))
    return Candidate(repair_indices(raw, pool_size), alpha1, alpha2, fine, float(s1), float(s2))


def candidate_from_params(params: dict, num_samples: int, pool_size: int, fine: str) -> Candidate:
    """Rebuild the candidate of a finished trial from its ``params`` (e.g. the best trial's)."""
    raw = [int(params[f"sample_{j}"]) for j in range(num_samples)]
    fine = params.get("fine", fine)
    return Candidate(repair_indices(raw, pool_size), float(params["alpha1"]),
                     float(params["alpha2"]), fine, float(params[f"scale_{COARSE}"]),
                     float(params[f"scale_{fine}"]))


def _factors(scales: dict[str, list[float]], metric: str) -> list[float]:
    factors = scales.get(metric)
    if not factors:
        from lmprune.errors import LmpruneError

        raise LmpruneError(f"adapruner.scales has no alignment factors for metric {metric!r}; "
                           f"add e.g. adapruner.scales.{metric}=[1.0]")
    return [float(f) for f in factors]


def mix_scores(coarse: Scores, fine: Scores, candidate: Candidate) -> Scores:
    """α1·s1·I_vector + α2·s2·I_fine for every unit scored by both metrics (float64)."""
    w1 = candidate.alpha1 * candidate.scale_coarse
    w2 = candidate.alpha2 * candidate.scale_fine

    def mix(a, b):
        if torch.is_tensor(a) or torch.is_tensor(b):
            return w1 * torch.as_tensor(a).double() + w2 * torch.as_tensor(b).double()
        return w1 * float(a) + w2 * float(b)

    mixed = Scores()
    for kind in ("heads", "kv_groups", "neurons", "attention", "ffn", "layers"):
        ours, theirs = getattr(coarse, kind), getattr(fine, kind)
        getattr(mixed, kind).update({site: mix(ours[site], theirs[site])
                                     for site in ours if site in theirs})
    if coarse.hidden is not None and fine.hidden is not None:
        mixed.hidden = mix(coarse.hidden, fine.hidden)
    return mixed
