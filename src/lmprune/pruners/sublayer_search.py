"""Relative impact (RI) of whole sublayers and the greedy search that removes them.

"Rethinking the Impact of Heterogeneous Sublayers in Transformers" (ICLR 2025 submission,
openreview.net/forum?id=qG1S5eXMzx) scores every attention (MHA) and every FFN sublayer by

    RI(s)  = (PPL(model without s) - PPL(model)) / PPL(model)          (relative impact)
    nRI(s) = RI(s) / params(s)                                           (normalized RI)

and prunes heterogeneously: the sublayer with the lowest (normalized) RI goes first. In the
*progressive* search RI is recomputed on the current, already pruned model after every
removal; the *one-shot* variant ranks once and removes in that order.

"Without s" is a real forward pass: the sublayer's scalar mask is 0 under ``apply_masks``,
which the core's equivalence tests show is exactly the physically removed sublayer (its
output projection's output, bias included, is zeroed; its pre-norm only fed it). Sublayers
already removed stay masked while later candidates are evaluated.

Cost: one forward over the windows per candidate. With S candidate sublayers, one-shot needs
S + 1 forwards for the ranking plus one per removal (the perplexity after it, for the
history); progressive needs 1 + sum over steps of the remaining candidates, about S * k for
k removals (O(S^2) when k ~ S). SmolLM2-135M (S = 60; attention 885,312 and FFN 2,654,784
parameters; body 106.2M) on 4 windows x 128 tokens, 2 shared CPU cores: one masked forward
took 7-9 s at load average ~4; the one-shot scan (61 forwards) took 965 s at load 7-10.
Removing 20% of the body takes 8 (all FFN) to 24 (all attention) removals, so progressive
needs ~450-1,170 forwards: hours on such a CPU, which is what ``max_windows`` and fewer,
shorter windows are for. Candidates are evaluated ``rows_per_pass // N`` at a time in one
forward (:mod:`lmprune.pruners.sublayer_batch`), which is what makes the search fast on a
GPU (a 135M model is bound by kernel launches there).

**Exact budgets.** With ``finish="neurons"`` and a ``params`` budget the search stops before a
removal that would overshoot the target by more than ``TOLERANCE`` (0.2 points of the body)
and removes the rest as FFN neurons (:mod:`lmprune.pruners.sublayer_finish`); with
``finish="none"`` it stops at the first removal that reaches the target (overshooting by up
to one sublayer). ``params_removed`` / ``achieved`` report what was removed either way.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from lmprune.arch import AttentionSite, FFNSite, ModelStructure
from lmprune.errors import LmpruneError
from lmprune.evaluation.perplexity import perplexity_of_windows
from lmprune.pruners.param_budget import TOLERANCE
from lmprune.pruners.selection import in_range
from lmprune.pruners.sublayer_batch import candidate_perplexities
from lmprune.pruners.sublayer_finish import finish_with_neurons
from lmprune.structures import Masks, apply_masks
from lmprune.structures.counting import count_parameters, sublayer_cost

Budget = Literal["params", "sublayers"]
SUBLAYER_KINDS = ("attention", "ffn")


@dataclass(frozen=True)
class Candidate:
    """One prunable sublayer: its site name, kind, layer index and parameter count."""

    name: str
    kind: str  # "attention" or "ffn"
    layer: int
    cost: int


@dataclass
class SublayerSearchResult:
    """What the search removed and why.

    ``history`` has one entry per removal: ``step``, ``removed``, ``kind``, ``ri`` and
    ``score`` of the removed sublayer, ``perplexity`` after the removal, ``params_removed``
    and ``sublayers_removed`` so far, and ``candidates`` = {site: {"ri", "score",
    "perplexity"}} as ranked at that step (one-shot: the initial values of the sublayers still
    present). ``ri_initial`` / ``score_initial`` are RI and the ranking score (nRI when
    normalized) of every candidate on the unpruned model.
    """

    masks: Masks
    history: list[dict]
    ri_initial: dict[str, float]
    score_initial: dict[str, float]
    candidates: list[Candidate]
    base_perplexity: float
    final_perplexity: float
    params_removed: int
    body_params: int
    target: float  # parameters (budget "params") or sublayers (budget "sublayers") to remove
    settings: dict = field(default_factory=dict)
    finish: dict = field(default_factory=dict)  # neurons removed to land on the budget

    @property
    def achieved(self) -> float:
        """Share of the body parameters removed (sublayers and finishing neurons)."""
        return self.params_removed / self.body_params

    @property
    def removed(self) -> list[str]:
        """Removed sublayers in the order they were removed."""
        return [step["removed"] for step in self.history]

    def as_dict(self) -> dict:
        """JSON-ready summary (masks as the list of removed site names)."""
        return {"removed": self.removed, "history": self.history, "ri_initial": self.ri_initial,
                "score_initial": self.score_initial,
                "candidates": [asdict(c) for c in self.candidates],
                "base_perplexity": self.base_perplexity,
                "final_perplexity": self.final_perplexity,
                "params_removed": self.params_removed, "body_params": self.body_params,
                "achieved": self.achieved, "target": self.target, "settings": self.settings,
                "finish": self.finish}


def sublayer_candidates(model: nn.Module, structure: ModelStructure,
                        kinds: tuple[str, ...] = SUBLAYER_KINDS,
                        layer_range: list[int] | None = None) -> list[Candidate]:
    """Every attention / FFN sublayer of the requested kinds inside ``layer_range``."""
    sites: list[tuple[str, AttentionSite | FFNSite]] = []
    if "attention" in kinds:
        sites += [("attention", s) for s in structure.attention]
    if "ffn" in kinds:
        sites += [("ffn", s) for s in structure.ffn]
    found = [Candidate(s.name, kind, int(s.layer.rsplit(".", 1)[1]), sublayer_cost(model, s))
             for kind, s in sites if in_range(s.layer, layer_range)]
    return sorted(found, key=lambda c: (c.layer, SUBLAYER_KINDS.index(c.kind)))


def removal_masks(structure: ModelStructure, removed: dict[str, str]) -> Masks:
    """Scalar attention / ffn masks for every site: 0 for ``removed`` ({site: kind}), else 1."""
    masks = Masks.ones(structure, SUBLAYER_KINDS)
    for name, kind in removed.items():
        getattr(masks, kind)[name] = torch.zeros(())
    return masks


def masked_perplexity(model: nn.Module, structure: ModelStructure, windows: torch.Tensor,
                      removed: dict[str, str], batch_size: int = 8) -> float:
    """Perplexity of ``model`` on ``windows`` with the ``removed`` sublayers masked out."""
    with apply_masks(model, removal_masks(structure, removed), structure):
        return perplexity_of_windows(model, windows, batch_size)


def relative_impact(ppl_without: float, ppl: float, cost: int,
                    normalize: bool) -> tuple[float, float]:
    """(RI, ranking score): RI = (PPL_without - PPL) / PPL; score = RI / params if normalized."""
    ri = (ppl_without - ppl) / ppl
    return ri, (ri / cost if normalize else ri)


class _Budget:
    """Turns ``sparsity`` into a removal target and says when it is met.

    params: target = sparsity * body parameters; met at the first removal that reaches it, so
    the overshoot is less than the parameters of the last removed sublayer.
    sublayers: target = floor(sparsity * S) of the S candidate sublayers.
    """

    def __init__(self, kind: Budget, sparsity: float, candidates: list[Candidate], body: int,
                 structure: ModelStructure, finishing: bool = False):
        if kind not in ("params", "sublayers"):
            raise LmpruneError(f"sublayer budget must be 'params' or 'sublayers', got {kind!r} "
                               f"(set sublayer.budget)")
        if not 0.0 <= sparsity < 1.0:
            raise LmpruneError(f"sparsity must be in [0, 1), got {sparsity} (set prune.sparsity)")
        self.kind = kind
        self.target = (sparsity * body if kind == "params"
                       else math.floor(sparsity * len(candidates) + 1e-9))
        self.finishing = finishing and kind == "params"
        self.slack = TOLERANCE * body if self.finishing else 0.0
        self._check_reachable(candidates, structure, sparsity)

    def amount(self, removed: list[Candidate]) -> float:
        return sum(c.cost for c in removed) if self.kind == "params" else len(removed)

    def met(self, removed: list[Candidate]) -> bool:
        return self.amount(removed) >= self.target - self.slack

    def fits(self, removed: list[Candidate], choice: Candidate) -> bool:
        """False when finishing and removing ``choice`` would overshoot beyond the slack."""
        return not self.finishing or self.amount(removed) + choice.cost <= self.target + self.slack

    def _check_reachable(self, candidates, structure, sparsity) -> None:
        keep_one = None  # the cheapest attention sublayer must stay if all are candidates
        attention = [c for c in candidates if c.kind == "attention"]
        if structure.attention and len(attention) == len(structure.attention):
            keep_one = min(attention, key=lambda c: c.cost)
        removable = [c for c in candidates if c is not keep_one]
        if self.amount(removable) < self.target:
            unit = "parameters" if self.kind == "params" else "sublayers"
            raise LmpruneError(
                f"sublayer-ri cannot reach sparsity {sparsity}: it needs {self.target:,.0f} "
                f"{unit} removed but removing every candidate sublayer it may remove (one "
                f"attention sublayer always stays) gives only {self.amount(removable):,} "
                f"({len(candidates)} candidates). Lower prune.sparsity, widen prune.layer_range, "
                f"or allow both 'attention' and 'ffn' in prune.structures.")


def _removable(c: Candidate, structure: ModelStructure, removed: dict[str, str]) -> bool:
    """False for the last attention sublayer of the model (the core refuses removing all)."""
    if c.kind != "attention":
        return True
    left = sum(1 for s in structure.attention if s.name not in removed)
    return left > 1


def _score_step(model, structure, windows, present, removed, ppl, normalize, rows_per_pass,
                step, progress) -> dict[str, dict]:
    """RI of every present candidate on the current model (``removed`` stays masked)."""
    rows = {}
    per_pass = max(1, rows_per_pass // len(windows))
    base = removal_masks(structure, removed)
    groups = [present[i:i + per_pass] for i in range(0, len(present), per_pass)]
    bar = tqdm(total=len(present), desc=f"sublayer RI, step {step}", leave=False,
               disable=not progress, unit="sublayer")
    with bar:
        for group in groups:
            ppls = candidate_perplexities(model, structure, windows, base,
                                          [c.name for c in group], rows_per_pass)
            for c in group:
                ri, score = relative_impact(ppls[c.name], ppl, c.cost, normalize)
                rows[c.name] = {"ri": ri, "score": score, "perplexity": ppls[c.name]}
            bar.update(len(group))
    return rows


def ri_search(model: nn.Module, structure: ModelStructure, windows: torch.Tensor,
              sparsity: float, normalize: bool = True, progressive: bool = True,
              budget: Budget = "params", *, kinds: tuple[str, ...] = SUBLAYER_KINDS,
              layer_range: list[int] | None = None, max_windows: int | None = None,
              batch_size: int = 8, progress: bool = True, finish: str = "none",
              rows_per_pass: int = 64) -> SublayerSearchResult:
    """Greedy removal of the sublayer with the lowest (normalized) RI until the budget is met.

    ``windows`` [N, L] are the calibration token windows (``max_windows`` keeps the first
    ones). Ties keep the candidates' (layer, attention-before-ffn) order. ``finish`` is
    ``neurons`` or ``none`` (module docstring); ``rows_per_pass`` bounds the windows of one
    batched forward (``rows_per_pass // N`` candidates each). Raises :class:`LmpruneError`
    when the budget cannot be met without removing every attention sublayer.
    """
    if finish not in ("neurons", "none"):
        raise LmpruneError(f"sublayer.finish must be 'neurons' or 'none', got {finish!r}")
    _check_model(model, structure, windows)
    if max_windows is not None:
        windows = windows[:max_windows]
    candidates = sublayer_candidates(model, structure, kinds, layer_range)
    body = count_parameters(model, structure).body
    goal = _Budget(budget, sparsity, candidates, body, structure, finishing=finish == "neurons")
    was_training = model.training
    try:
        state = _Search(model, structure, windows, normalize, batch_size, progress,
                        rows_per_pass)
        state.run(candidates, goal, progressive)
        masks, record = removal_masks(structure, state.removed), {"params": 0, "neurons": {}}
        if goal.finishing:
            remainder = goal.target - goal.amount(state.gone)
            masks, record = finish_with_neurons(model, structure, windows, state.removed,
                                                masks, remainder, layer_range, progress)
            if record["params"]:
                with apply_masks(model, masks, structure):
                    state.ppl = perplexity_of_windows(model, windows, batch_size)
    finally:
        model.train(was_training)
    settings = {"sparsity": sparsity, "normalize": normalize, "progressive": progressive,
                "budget": budget, "kinds": list(kinds), "layer_range": layer_range,
                "windows": list(windows.shape), "finish": finish}
    return SublayerSearchResult(
        masks, state.history, state.ri_initial, state.score_initial, candidates, state.base,
        state.ppl, sum(c.cost for c in state.gone) + record["params"], body, goal.target,
        settings, record)


class _Search:
    """The search's mutable state: removed sublayers, current perplexity, history."""

    def __init__(self, model, structure, windows, normalize, batch_size, progress,
                 rows_per_pass=64):
        self.model, self.structure, self.windows = model, structure, windows
        self.normalize, self.batch_size, self.progress = normalize, batch_size, progress
        self.rows_per_pass = rows_per_pass
        self.removed: dict[str, str] = {}
        self.gone: list[Candidate] = []
        self.history: list[dict] = []
        self.base = self.ppl = masked_perplexity(model, structure, windows, {}, batch_size)
        self.ri_initial: dict[str, float] = {}
        self.score_initial: dict[str, float] = {}

    def score(self, present: list[Candidate]) -> dict[str, dict]:
        return _score_step(self.model, self.structure, self.windows, present, self.removed,
                           self.ppl, self.normalize, self.rows_per_pass, len(self.history),
                           self.progress)

    def run(self, candidates: list[Candidate], goal: _Budget, progressive: bool) -> None:
        present = list(candidates)
        bar = tqdm(total=100, desc="sublayer-ri budget", unit="%", leave=False,
                   disable=not self.progress, bar_format="{l_bar}{bar}| {n:.0f}/{total}% "
                                                         "[{elapsed}<{remaining}]")
        with bar:
            rows = self.score(present)
            self.ri_initial = {n: r["ri"] for n, r in rows.items()}
            self.score_initial = {n: r["score"] for n, r in rows.items()}
            while not goal.met(self.gone):
                if progressive and self.history:
                    rows = self.score(present)
                choice = self._lowest(present, rows)
                if choice is None:  # only the last attention sublayer is left
                    raise LmpruneError(
                        f"sublayer-ri stopped after {len(self.gone)} removals without reaching "
                        f"the budget: the only sublayer left is the model's last attention "
                        f"sublayer. Lower prune.sparsity.")
                if not goal.fits(self.gone, choice):
                    break  # the rest is removed as neurons (finish="neurons")
                after = rows[choice.name]["perplexity"] if progressive else None
                self._remove(choice, present, rows, after)
                done = min(100.0, 100.0 * goal.amount(self.gone) / max(goal.target, 1))
                bar.update(done - bar.n)

    def _lowest(self, present: list[Candidate], rows: dict) -> Candidate | None:
        allowed = [c for c in present if _removable(c, self.structure, self.removed)]
        return min(allowed, key=lambda c: rows[c.name]["score"], default=None)

    def _remove(self, choice: Candidate, present: list[Candidate], rows: dict,
                after: float | None) -> None:
        step = {"step": len(self.history), "removed": choice.name, "kind": choice.kind,
                "ri": rows[choice.name]["ri"], "score": rows[choice.name]["score"],
                "candidates": {c.name: dict(rows[c.name]) for c in present}}
        present.remove(choice)
        self.removed[choice.name] = choice.kind
        self.gone.append(choice)
        self.ppl = after if after is not None else masked_perplexity(
            self.model, self.structure, self.windows, self.removed, self.batch_size)
        step.update(perplexity=self.ppl, params_removed=sum(c.cost for c in self.gone),
                    sublayers_removed=len(self.gone))
        self.history.append(step)


def _check_model(model: nn.Module, structure: ModelStructure, windows: torch.Tensor) -> None:
    if structure.family != "llama" or model.get_output_embeddings() is None:
        raise LmpruneError(
            f"sublayer-ri ranks sublayers by causal-LM perplexity, so it needs a decoder with a "
            f"language-model head (llama, mistral, qwen2 loaded with task causal-lm); got a "
            f"{structure.family}-family {type(model).__name__}")
    if windows.dim() != 2 or windows.shape[0] == 0 or windows.shape[1] < 2:
        raise LmpruneError(f"sublayer-ri needs token windows of shape [N, L] with N >= 1 and "
                           f"L >= 2, got {tuple(windows.shape)}; draw calibration samples first")
