"""Section ``cost``: what pruning itself costs at LLaMA-7B shape (SmolLM2-135M for comparison),
issues #12 and #13: one AdaPruner trial and RI scoring of one sublayer, wall seconds and peak
memory (``torch.cuda.max_memory_allocated`` through ``lmprune.evaluation.memory``).

Every number times lmprune's own code on random weights and random token windows, with the
library's default sizes (``RunConfig`` defaults: ``data.num_samples`` x ``data.seq_len``
calibration windows, ``adapruner.heldout`` held-out windows, ``sublayer.rows_per_pass``):

* **AdaPruner trial** = the body of ``_Objective.__call__`` (what optuna calls per trial) without
  optuna's ``suggest_*``: ``_Objective.masks(candidate)`` (Taylor vector + fine metric on the
  candidate's windows, cached per (subset, fine metric); the mix; the parameter-budget plan)
  then ``_Objective.perplexity(masks, heldout)`` (masks applied, held-out perplexity, masks
  removed). A *cold* trial meets a (sample subset, fine metric) not yet cached and pays the
  gradient pass; a *warm* one reuses the cached metrics (same subset, another mix): all a
  trial costs when the search revisits a subset (the LRU cache holds 16).
* **RI** = ``lmprune.pruners.sublayer_batch.candidate_perplexities`` (what each step of the
  search calls) for one attention and one FFN sublayer of a middle layer, at the default
  ``rows_per_pass`` and with several candidates in one forward; the base perplexity is
  ``sublayer_search.masked_perplexity``. The whole progressive search is *estimated* as
  seconds per sublayer x the sublayer evaluations it needs (:func:`search_evaluations`).
"""
from __future__ import annotations

import time

import measure
import models
from lmprune.arch import describe

SHAPES = ("llama-7b", "smollm2-135m")
#: candidates in one forward for the batched RI row (rows_per_pass = this x windows)
BATCHED_CANDIDATES = 4


def run_config(quick: bool):
    """The library's defaults (a RunConfig as ``lmprune prune`` builds it); tiny under quick."""
    from lmprune.config import load_config

    overrides = ["prune.method=adapruner"]
    if quick:
        overrides += ["data.num_samples=2", "data.seq_len=16", "adapruner.heldout=4",
                      "sublayer.rows_per_pass=4"]
    return load_config(None, overrides)


def sizes(run) -> dict:
    return {"num_samples": run.data.num_samples, "seq_len": run.data.seq_len,
            "heldout": run.adapruner.heldout, "rows_per_pass": run.sublayer.rows_per_pass,
            "sparsity": run.prune.sparsity, "budget": run.prune.budget,
            "sublayer_finish": run.sublayer.finish}


def _measure(ctx, results: dict, kind: str, entry: dict, fn) -> dict | None:
    """One budget-checked, guarded measurement appended to ``pruning_cost.rows``."""
    if not ctx.budget.allows(kind, entry, results):
        return None
    start = time.perf_counter()
    row = {**entry, **measure.guarded(measure.timed_peak, fn, ctx.device)}
    ctx.budget.observe(kind, time.perf_counter() - start)
    results["pruning_cost"]["rows"].append(row)
    ctx.save(results)
    return row


def cost_section(ctx, results: dict) -> None:
    run = run_config(ctx.quick)
    results.setdefault("pruning_cost", {"settings": sizes(run), "rows": [], "ri_search": []})
    for shape in SHAPES:
        if not ctx.budget.allows(f"cost_{shape}_model", {"shape": shape}, results):
            continue
        model = models.build(shape, ctx.device, ctx.dtype, ctx.quick)
        structure = describe(model)
        heldout = measure.random_windows(model, run.adapruner.heldout, run.data.seq_len, 1)
        per_sublayer = _ri_rows(ctx, results, shape, model, structure, run, heldout)
        results["pruning_cost"]["ri_search"].append(
            {"shape": shape, **search_evaluations(model, structure, run, per_sublayer)})
        ctx.save(results)
        _trial_rows(ctx, results, shape, model, structure, run, heldout)
        del model
        measure.free(ctx.device)


def _ri_rows(ctx, results, shape, model, structure, run, windows) -> float | None:
    """Base perplexity, one attention and one FFN sublayer (default rows_per_pass), and
    several sublayers in one forward; returns the mean seconds per sublayer evaluation of the
    attention and FFN rows (what the search pays per candidate at the defaults)."""
    from lmprune.pruners.sublayer_search import masked_perplexity

    base = {}

    def base_ppl():
        base["ppl"] = masked_perplexity(model, structure, windows, {})
        return {"perplexity": base["ppl"]}

    _measure(ctx, results, "cost_ri", {
        "shape": shape, "label": "RI base perplexity",
        "step": "RI: base perplexity (no sublayer removed)",
        "timed": f"sublayer_search.masked_perplexity, {len(windows)} x {windows.shape[1]} "
                 f"windows"}, base_ppl)
    middle = len(structure.attention) // 2
    pairs = [s.name for pair in zip(structure.attention, structure.ffn) for s in pair]
    default = [_ri_row(ctx, results, shape, model, structure, windows, base, label, [name],
                       run.sublayer.rows_per_pass)
               for label, name in (("attention", structure.attention[middle].name),
                                   ("FFN", structure.ffn[middle].name))]
    _ri_row(ctx, results, shape, model, structure, windows, base, "attention + FFN",
            pairs[:BATCHED_CANDIDATES], BATCHED_CANDIDATES * len(windows))
    seconds = [row["seconds_per_sublayer"] for row in default if row and "seconds" in row]
    return sum(seconds) / len(seconds) if seconds else None


def _ri_row(ctx, results, shape, model, structure, windows, base: dict, label: str,
            names: list[str], rows_per_pass: int) -> dict | None:
    """``candidate_perplexities`` for ``names`` (RI against ``base``) as one measurement."""
    from lmprune.pruners.sublayer_batch import candidate_perplexities
    from lmprune.pruners.sublayer_search import removal_masks

    def score():
        ppls = candidate_perplexities(model, structure, windows, removal_masks(structure, {}),
                                      names, rows_per_pass)
        ri = {k: (v - base["ppl"]) / base["ppl"] for k, v in ppls.items()} if base else {}
        return {"sublayers": names, "ri": ri}

    per_pass = max(1, rows_per_pass // len(windows))
    row = _measure(ctx, results, "cost_ri", {
        "shape": shape, "label": f"RI {label} x{len(names)}",
        "step": f"RI: {len(names)} {label} sublayer(s), {per_pass} per forward",
        "timed": f"sublayer_batch.candidate_perplexities, {len(windows)} x {windows.shape[1]} "
                 f"windows, rows_per_pass={rows_per_pass}"}, score)
    if row and "seconds" in row:
        row["seconds_per_sublayer"] = row["seconds"] / len(names)
        ctx.save(results)
    return row


def progressive_evaluations(candidates: int, steps: int) -> int:
    """Forwards of a progressive RI search that scores ``steps`` times among ``candidates``
    sublayers: the base perplexity, then step k scores the ``candidates - k`` still present.
    Steps = removals, or removals + 1 when the search stops before a removal that would
    overshoot (``finish=neurons``)."""
    return 1 + sum(candidates - k for k in range(steps))


def search_evaluations(model, structure, run, per_sublayer: float | None) -> dict:
    """Sublayer evaluations of a full progressive RI search at ``prune.sparsity`` (params
    budget), estimated from the removals needed: fewest when the largest sublayers go first,
    most when the smallest do. The latter bounds the search from above (one that stops early
    to finish with neurons removed fewer than that, then scored once more); with
    ``finish=neurons`` it can also stop below the former and remove the rest as FFN neurons
    (one Taylor pass, not counted). Which sublayers go depends on the scores: an estimate."""
    from lmprune.pruners.param_budget import TOLERANCE
    from lmprune.pruners.settings import resolve_layer_range
    from lmprune.pruners.sublayer_search import sublayer_candidates
    from lmprune.structures.counting import count_parameters

    layer_range = resolve_layer_range("sublayer-ri", run.prune.layer_range, structure)
    costs = [c.cost for c in sublayer_candidates(model, structure, layer_range=layer_range)]
    body = count_parameters(model, structure).body
    slack = TOLERANCE * body if run.sublayer.finish == "neurons" else 0.0
    target = run.prune.sparsity * body - slack

    def removals(order: list[int]) -> int:
        total = 0
        for k, cost in enumerate(order):
            if total >= target:
                return k
            total += cost
        return len(order)

    counts = [removals(sorted(costs, reverse=True)), removals(sorted(costs))]
    evaluations = [progressive_evaluations(len(costs), k) for k in counts]
    out = {"candidates": len(costs), "removals": counts, "evaluations": evaluations,
           "sparsity": run.prune.sparsity, "finish": run.sublayer.finish}
    if per_sublayer is not None:
        out["seconds_per_sublayer"] = per_sublayer
        out["estimated_seconds"] = [e * per_sublayer for e in evaluations]
    return out


def _trial_rows(ctx, results, shape, model, structure, run, heldout) -> None:
    """Cold trials (gradient pass included: the first one also pays first-call set-up, so a
    second subset shows the steady state), a warm one (cached metrics), and a cold one whose
    fine metric is element2 (per-sample passes). The pool holds two subsets of num_samples."""
    from lmprune.pruners.adapruner import _Objective
    from lmprune.pruners.adapruner_space import Candidate

    n = run.data.num_samples
    pool = measure.random_windows(model, 2 * n, run.data.seq_len, 0)
    objective = _Objective(model, structure, run, pool, heldout)
    first, second = tuple(range(n)), tuple(range(n, 2 * n))
    cold = "cold: metrics not cached, gradient pass included"
    trials = [("trial cold element1 (first)", f"{cold}, the first of this section",
               Candidate(first, 0.5, "element1")),
              ("trial warm element1", "warm: metrics cached (same subset), another mix",
               Candidate(first, 0.25, "element1")),
              ("trial cold element1", f"{cold}, another subset",
               Candidate(second, 0.5, "element1")),
              ("trial cold element2", cold, Candidate(second, 0.5, "element2"))]
    for label, what, candidate in trials:
        def trial(candidate=candidate):
            masks = objective.masks(candidate)
            value = objective.perplexity(masks, objective.heldout)
            return {"objective": value, "candidate": candidate.as_dict()}

        _measure(ctx, results, "cost_trial", {
            "shape": shape, "label": label,
            "step": f"AdaPruner trial, fine={candidate.fine}, {what}",
            "timed": f"adapruner._Objective.masks + .perplexity (one trial's work): vector + "
                     f"{candidate.fine} on {n} x {pool.shape[1]} windows, "
                     f"{len(heldout)} held-out windows"}, trial)
        model.zero_grad(set_to_none=True)
