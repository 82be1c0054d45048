"""AdaPruner: TPE search over calibration samples and the importance-metric mix.

Kong et al., "Sample-aware Adaptive Structured Pruning for Large Language Models" (AAAI 2025).
Each trial of a Bayesian optimization with a tree-structured Parzen estimator (optuna's
``TPESampler``; ``adapruner.sampler=random`` for plain random search) picks a point of the
solution space (``adapruner_space``): ``num_samples`` calibration windows from a pool, and the
mix of a coarse (vector-wise) and a fine (element-wise) Taylor importance,

    I = α1 · s1 · I_vector + α2 · s2 · I_fine,

prunes with it (``prune.*`` exactly as the taylor method: layer range, parameter budget,
allocation) and scores the pruned model by its perplexity on held-out calibration windows.
The masks returned are the consensus of the best trials after a confirmation round (below;
``adapruner.consensus=off``: the chosen trial's own).

Choices made here (no public code exists; see ``docs/adapruner.md``):

* the **pool** is the run's calibration samples followed by ``adapruner.pool_size`` further
  windows, so pool windows ``0 .. num_samples-1`` are exactly what the taylor method
  calibrates on; with ``adapruner.warm_start`` the first trials are those fixed baselines
  (pure fine ranking per fine metric, pure coarse ranking, on those windows; optuna
  ``enqueue_trial``), so the search starts where a hand-picked setting would stop;
* the pruned model of a trial is the *masked* model (``apply_masks``), exactly equivalent to
  physical removal, so a trial copies nothing;
* the Taylor metrics come from ``lmprune.scorers.taylor.taylor_metrics`` with ``run.taylor``'s
  aggregation, reduction and memory settings (one round of gradient passes gives vector +
  the trial's fine metric); they are cached per (sample subset, fine metric), LRU of
  ``CACHE_SIZE``;
* the parameter budget's unit counts do not depend on the scores, so every trial removes
  exactly as many parameters (``lmprune.pruners.param_budget``);
* the sampler is seeded with ``prune.seed + <trials already in the study>`` (a resumed study
  does not replay its random start-up trials); TPE is multivariate (``group=True`` handles the
  conditional ``scale_<fine>`` parameter);
* a non-finite perplexity is recorded as ``inf`` (the trial completes, TPE ranks it last);
* with ``storage`` the study lives in an SQLite file and resumes: trials left RUNNING by an
  interruption are marked FAIL and do not count; only COMPLETE trials count towards
  ``adapruner.trials`` and appear in the history. A fingerprint of the search (pool, held-out
  windows, space, budget) is stored with the study; resuming a different search is refused;
* ``probe`` windows (e.g. test text, in benchmarks) are scored for every trial too but never
  seen by the sampler: the history then shows how well the objective predicts them;
* a **confirmation round** (``adapruner.confirm_top``, an addition of ours): the best trial by
  the objective is the minimum of 30 noisy estimates, so its objective is biased low and, among
  close trials, it is often not the best on new text (the winner's curse). The best
  ``confirm_top`` distinct trials are scored again on ``calibration.confirm``, fresh windows no
  trial was chosen on, and the best there is the chosen trial. The round is not part of the
  study: a resumed search runs it again;
* a **consensus** (``adapruner.consensus``, ours too; default ``always``): the masks are those
  of the re-scored trials' mixed importances, each divided by its mean per unit kind and
  averaged (``compete``: only when that beats the chosen trial on the confirmation windows;
  ``off``: the chosen trial's masks).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from lmprune.arch import ModelStructure
from lmprune.errors import LmpruneError
from lmprune.evaluation.perplexity import perplexity_of_windows
from lmprune.pruners.adapruner_space import (COARSE, FINE_METRICS, Candidate, Space,
                                             baseline_params, candidate_from_params,
                                             consensus_scores, mix_scores, suggest_candidate)
from lmprune.pruners.selection import Scores
from lmprune.pruners.settings import check_settings, prune_settings, select_masks
from lmprune.registry import METHODS
from lmprune.structures import Masks, apply_masks

STUDY_NAME = "adapruner"
CACHE_SIZE = 16  # sample subsets whose Taylor metrics are kept in memory


@dataclass
class AdaPrunerResult:
    """The resulting masks (the consensus's or the chosen trial's) and the whole search."""

    masks: Masks
    best_params: dict
    best_value: float  # held-out perplexity of the pruned (masked) model
    history: list[dict]  # one entry per COMPLETE trial, in trial order
    best_trial: int = -1  # the chosen trial (after the confirmation round, if any)
    best_candidate: dict = field(default_factory=dict)
    search_best_trial: int = -1  # the trial with the best objective
    confirm_value: float | None = None  # the chosen trial's confirmation perplexity
    consensus_of: list[int] = field(default_factory=list)  # trials the consensus averages
    consensus_value: float | None = None  # its confirmation perplexity
    uses_consensus: bool = False  # the masks are the consensus's, not best_trial's

    def describe(self) -> str:
        """One line: the chosen trial, and what the confirmation round did."""
        line = (f"adapruner: chose trial {self.best_trial} of {len(self.history)} (held-out "
                f"perplexity {self.best_value:.4g}")
        confirmed = [h for h in self.history if h.get("confirm") is not None]
        if not confirmed:
            return line + ")"
        same = ("the objective's best too" if self.search_best_trial == self.best_trial else
                f"the objective alone would keep trial {self.search_best_trial}")
        line += (f"; confirmation {self.confirm_value:.4g}, best of {len(confirmed)} "
                 f"trials scored again on fresh windows; {same})")
        if self.consensus_value is None:
            return line
        verdict = "pruned by it" if self.uses_consensus else "not better: not used"
        return (line + f"; consensus of trials {self.consensus_of}: confirmation "
                       f"{self.consensus_value:.4g}, {verdict}")

    def objective_probe_correlation(self) -> float | None:
        """Spearman correlation of the objective and the probe perplexity over the trials
        (None without probe values or with fewer than 3 finite trials)."""
        pairs = [(h["value"], h["probe"]) for h in self.history
                 if h.get("probe") is not None and math.isfinite(h["value"])
                 and math.isfinite(h["probe"])]
        if len(pairs) < 3:
            return None
        ranks = [torch.tensor(v, dtype=torch.float64).argsort().argsort().double()
                 for v in zip(*pairs)]
        return float(torch.corrcoef(torch.stack(ranks))[0, 1])


class _Objective:
    """Candidate → masks → held-out perplexity, with gradient metrics cached per subset."""

    def __init__(self, model, structure: ModelStructure, run, pool: torch.Tensor,
                 heldout: torch.Tensor, probe: torch.Tensor | None = None,
                 progress: bool = False):
        self.model, self.structure, self.run = model, structure, run
        self.pool, self.heldout, self.probe = pool, heldout, probe
        self.settings = prune_settings(run, structure)
        self.space = Space.from_run(run, len(pool))
        self.progress = progress
        self._cache: OrderedDict[tuple, dict[str, Scores]] = OrderedDict()

    def metrics_for(self, samples: tuple[int, ...], fine: str) -> dict[str, Scores]:
        """vector + ``fine`` on the pool windows ``samples`` (LRU-cached per subset and fine
        metric: element1 never pays for element2's per-sample passes)."""
        from lmprune.pruners.taylor import taylor_options
        from lmprune.scorers.taylor import taylor_metrics

        key = (samples, fine)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        scores = taylor_metrics(self.model, self.structure, self.pool[list(samples)],
                                (COARSE, fine), progress=self.progress,
                                **taylor_options(self.run, self.settings))
        self._cache[key] = scores
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return scores

    def mixed(self, candidate: Candidate) -> Scores:
        metrics = self.metrics_for(candidate.samples, candidate.fine)
        return mix_scores(metrics[COARSE], metrics[candidate.fine], candidate,
                          self.run.adapruner.align)

    def masks(self, candidate: Candidate | Scores) -> Masks:
        """The masks of a candidate (or of given scores) under the run's budget."""
        scores = candidate if isinstance(candidate, Scores) else self.mixed(candidate)
        return select_masks(self.model, self.structure, scores, self.settings)

    def perplexity(self, masks: Masks, windows: torch.Tensor) -> float:
        with apply_masks(self.model, masks, self.structure):
            ppl = perplexity_of_windows(self.model, windows)
        return ppl if math.isfinite(ppl) else math.inf

    def __call__(self, trial) -> float:
        candidate = suggest_candidate(trial, self.space)
        start = time.perf_counter()
        masks = self.masks(candidate)
        value = self.perplexity(masks, self.heldout)
        trial.set_user_attr("candidate", candidate.as_dict())
        trial.set_user_attr("seconds", time.perf_counter() - start)
        if self.probe is not None:
            trial.set_user_attr("probe", self.perplexity(masks, self.probe))
        return value


def check_calibration(calibration, run) -> tuple[torch.Tensor, torch.Tensor]:
    """The pool (calibration samples first, then the extra pool windows) and the held-out
    windows, or an error saying how to build them."""
    how = ("the adapruner recipe builds it with build_calibration(..., "
           "pool=run.adapruner.pool_size, heldout=run.adapruner.heldout, "
           "confirm=run.adapruner.confirm_windows())")
    if calibration is None:
        raise LmpruneError(f"method 'adapruner' needs calibration data with a pool and held-out "
                           f"windows, got none; {how}")
    needed = {"pool": "the candidate pool", "heldout": "the objective's held-out windows"}
    if run.adapruner.confirm_windows():
        needed["confirm"] = (f"fresh windows for the confirmation round of "
                             f"adapruner.confirm_top={run.adapruner.confirm_top}; or set "
                             f"adapruner.confirm_top=0")
    for name, what in needed.items():
        if getattr(calibration, name, None) is None or len(getattr(calibration, name)) == 0:
            raise LmpruneError(f"method 'adapruner' needs calibration.{name} ({what}), but "
                               f"the calibration has none; {how}")
    parts = [calibration.samples] if getattr(calibration, "samples", None) is not None else []
    pool = torch.cat([*parts, calibration.pool]) if parts else calibration.pool
    n = run.data.num_samples
    if len(pool) < n:
        raise LmpruneError(f"the AdaPruner pool has {len(pool)} samples, fewer than the "
                           f"{n} each trial calibrates on (data.num_samples); raise "
                           f"adapruner.pool_size to at least {n} or lower data.num_samples")
    return pool, calibration.heldout


def _digest(tensor: torch.Tensor) -> str:
    return hashlib.sha1(tensor.contiguous().cpu().numpy().tobytes()).hexdigest()[:16]


def search_fingerprint(model, run, pool: torch.Tensor, heldout: torch.Tensor,
                       structure: ModelStructure | None = None) -> dict:
    """What must match for a stored study to be resumed (the model by class and size)."""
    from lmprune.arch import describe

    a, t = run.adapruner, run.taylor
    settings = prune_settings(run, structure or describe(model))
    size = sum(p.numel() for p in model.parameters())
    return _plain({
        "model": f"{type(model).__name__} with {size} parameters", "pool": _digest(pool),
        "heldout": _digest(heldout), "num_samples": run.data.num_samples, "fine": a.fine,
        "scales": {k: [float(v) for v in vs] for k, vs in sorted(a.scales.items())},
        "sampler": a.sampler, "search_samples": a.search_samples, "search_mix": a.search_mix,
        "align": a.align, "warm_start": a.warm_start, "settings": settings.describe(),
        "taylor": [t.aggregation, t.reduction]})


def _plain(value):
    """``value`` as it comes back from JSON (lists for tuples, str keys): stored == fresh."""
    return json.loads(json.dumps(value))


@contextlib.contextmanager
def _quiet_optuna():
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def make_sampler(kind: str, startup_trials: int, seed: int):
    """optuna sampler for ``adapruner.sampler``: multivariate TPE or uniform random."""
    import optuna

    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind != "tpe":
        raise LmpruneError(f"unknown adapruner.sampler {kind!r}; valid: tpe, random")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # group=True
        return optuna.samplers.TPESampler(n_startup_trials=startup_trials, group=True,
                                          seed=seed)


def _open_study(run, storage: str | None, fingerprint: dict):
    import optuna
    from optuna.trial import TrialState

    url = None
    if storage is not None:
        path = Path(storage).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{path}"
    study = optuna.create_study(storage=url, study_name=STUDY_NAME, direction="minimize",
                                load_if_exists=True)
    stored = study.user_attrs.get("fingerprint")
    if stored is None:
        study.set_user_attr("fingerprint", fingerprint)
    elif stored != fingerprint:
        differ = sorted(k for k in fingerprint if stored.get(k) != fingerprint[k])
        raise LmpruneError(f"the AdaPruner study in {storage} was made by a different search "
                           f"(differs in: {', '.join(differ)}); delete the file or pass another "
                           f"storage path to start a new search")
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        study.tell(trial.number, state=TrialState.FAIL)  # left behind by an interruption
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    study.sampler = make_sampler(run.adapruner.sampler, run.adapruner.startup_trials,
                                 run.prune.seed + len(study.trials))
    return study, done


def warm_start_params(space: Space) -> list[dict]:
    """The fixed baselines on the first ``num_samples`` pool windows: the pure fine ranking of
    each fine metric in the space, then the pure coarse ranking (one mix without search_mix)."""
    fines = list(FINE_METRICS) if space.fine == "search" else [space.fine]
    if not space.search_mix:
        return [baseline_params(space, 0.5, fine) for fine in fines]
    out = [baseline_params(space, 1.0, fine) for fine in fines]
    coarse = baseline_params(space, 0.0, fines[0])
    return out + ([coarse] if coarse not in out else [])


def history_of(study) -> list[dict]:
    """One dict per COMPLETE trial: number, value, best-so-far, params, candidate, probe,
    seconds, and whether it was a warm-start baseline."""
    from optuna.trial import TrialState

    history, best = [], math.inf
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        best = min(best, trial.value)
        candidate = trial.user_attrs.get("candidate", {})
        history.append({"number": trial.number, "value": trial.value, "best_so_far": best,
                        "params": dict(trial.params), "samples": candidate.get("samples"),
                        "candidate": candidate, "probe": trial.user_attrs.get("probe"),
                        "seconds": trial.user_attrs.get("seconds"),
                        "warm_start": bool(trial.user_attrs.get("warm_start"))})
    return history


class Rescored(NamedTuple):
    """A trial scored again by the confirmation round (its scores feed the consensus)."""

    perplexity: float
    masks: Masks
    scores: Scores


def confirmation_round(objective: _Objective, history: list[dict], top: int,
                       windows: torch.Tensor, progress: bool = False) -> dict[int, Rescored]:
    """The best ``top`` distinct trials by the objective scored on ``windows`` (trial number
    -> perplexity, masks, mixed scores); trials with the same candidate are scored once."""
    ranked = sorted((h for h in history if math.isfinite(h["value"])),
                    key=lambda h: (h["value"], h["number"]))
    chosen, seen = [], set()
    for h in ranked:
        key = json.dumps(h["candidate"], sort_keys=True)
        if key not in seen:
            seen.add(key)
            chosen.append(h)
        if len(chosen) == top:
            break
    out = {}
    for h in tqdm(chosen, desc="adapruner confirmation", disable=not progress,
                  dynamic_ncols=True):
        scores = objective.mixed(candidate_from_params(h["params"], objective.space))
        masks = objective.masks(scores)
        out[h["number"]] = Rescored(objective.perplexity(masks, windows), masks, scores)
    return out


def consensus_round(objective: _Objective, scores: list[Scores],
                    windows: torch.Tensor) -> tuple[Masks, float]:
    """Masks of the consensus of mixed importances ``scores``
    (:func:`~lmprune.pruners.adapruner_space.consensus_scores`; the run's budget) and their
    perplexity on ``windows``."""
    masks = objective.masks(consensus_scores(scores))
    return masks, objective.perplexity(masks, windows)


def _chosen_trial(history: list[dict], confirmed: dict[int, float]) -> dict:
    """The trial with the best confirmation perplexity, else the best objective (ties: the
    earlier trial)."""
    if confirmed:
        number = min(confirmed, key=lambda n: (confirmed[n], n))
        return next(h for h in history if h["number"] == number)
    return min(history, key=lambda h: (h["value"], h["number"]))


def adapruner_search(model, structure: ModelStructure, run, calibration,
                     storage: str | None = None, progress: bool = True,
                     probe: torch.Tensor | None = None) -> AdaPrunerResult:
    """Run (or resume, with ``storage``) the search; the masks of its decision (:func:`_decide`)."""
    pool, heldout = check_calibration(calibration, run)
    check_settings(structure, prune_settings(run, structure))
    objective = _Objective(model, structure, run, pool, heldout, probe, progress)
    with _quiet_optuna():
        study, done = _open_study(run, storage,
                                  search_fingerprint(model, run, pool, heldout, structure))
        if not study.trials and run.adapruner.warm_start:
            for params in warm_start_params(objective.space)[:run.adapruner.trials]:
                study.enqueue_trial(params, user_attrs={"warm_start": True})
        remaining = max(0, run.adapruner.trials - done)
        bar = tqdm(total=run.adapruner.trials, initial=done, desc="adapruner trials",
                   disable=not progress, dynamic_ncols=True)
        with bar:
            for _ in range(remaining):
                study.optimize(objective, n_trials=1)
                bar.set_postfix(best_ppl=f"{study.best_value:.4g}")
                bar.update(1)
        history = history_of(study)
    result = _decide(objective, run, calibration, history, progress)
    if progress:
        tqdm.write(result.describe())
    return result


def _decide(objective: _Objective, run, calibration, history: list[dict],
            progress: bool) -> AdaPrunerResult:
    """After the trials: the confirmation round, the chosen trial and the consensus."""
    rescored = {}
    if run.adapruner.confirm_windows():
        rescored = confirmation_round(objective, history, run.adapruner.confirm_top,
                                      calibration.confirm, progress)
    confirmed = {n: r.perplexity for n, r in rescored.items()}
    for h in history:
        h["confirm"] = confirmed.get(h["number"])
    best = _chosen_trial(history, confirmed)
    candidate = candidate_from_params(best["params"], objective.space)
    masks = rescored[best["number"]].masks if rescored else objective.masks(candidate)
    result = AdaPrunerResult(masks, dict(best["params"]), float(best["value"]), history,
                             best["number"], candidate.as_dict(),
                             _chosen_trial(history, {})["number"], best["confirm"])
    mode = run.adapruner.consensus
    if mode != "off" and len(rescored) > 1:
        numbers = sorted(rescored)
        masks, value = consensus_round(objective, [rescored[n].scores for n in numbers],
                                       calibration.confirm)
        result.consensus_of, result.consensus_value = numbers, value
        if mode == "always" or value < result.confirm_value:
            result.masks, result.uses_consensus = masks, True
    return result


def save_history(result: AdaPrunerResult, path: str | Path) -> Path:
    """The search as JSON: best trial, its parameters and candidate, and every trial."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"best_trial": result.best_trial, "best_value": result.best_value,
               "best_params": result.best_params, "best_candidate": result.best_candidate,
               "search_best_trial": result.search_best_trial,
               "confirm_value": result.confirm_value, "consensus_of": result.consensus_of,
               "consensus_value": result.consensus_value,
               "uses_consensus": result.uses_consensus,
               "objective_probe_spearman": result.objective_probe_correlation(),
               "trials": result.history}
    path.write_text(json.dumps(_strict(payload), indent=2, allow_nan=False) + "\n")
    return path


def _strict(value):
    """Strict JSON: non-finite floats (a diverged trial's perplexity) become "inf"/"nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def plot_search_history(result: AdaPrunerResult, path: str | Path) -> Path:
    """PNG of held-out perplexity per trial (dots) and the best so far (line)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    finite = [h for h in result.history if math.isfinite(h["value"])]
    figure = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ax.scatter([h["number"] for h in finite], [h["value"] for h in finite], s=14,
               label="trial", color="tab:blue")
    ax.step([h["number"] for h in result.history], [h["best_so_far"] for h in result.history],
            where="post", label="best so far", color="tab:red")
    probed = [h for h in finite if h.get("probe") is not None and math.isfinite(h["probe"])]
    if probed:
        ax.scatter([h["number"] for h in probed], [h["probe"] for h in probed], s=10,
                   marker="x", label="probe (not searched on)", color="tab:gray")
    confirmed = [h for h in finite if h.get("confirm") is not None]
    if confirmed:
        ax.scatter([h["number"] for h in confirmed], [h["confirm"] for h in confirmed], s=22,
                   marker="D", facecolors="none", label="confirmation (fresh windows)",
                   color="tab:green")
    if result.consensus_value is not None and math.isfinite(result.consensus_value):
        ax.axhline(result.consensus_value, linestyle=":", color="tab:green",
                   label=f"consensus of trials {result.consensus_of} (confirmation)")
    if finite and max(h["value"] for h in finite) > 10 * min(h["value"] for h in finite):
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("held-out perplexity")
    chosen = "consensus" if result.uses_consensus else f"trial {result.best_trial}"
    ax.set_title(f"AdaPruner search (chosen: {chosen}; best trial objective "
                 f"{result.best_value:.4g})")
    ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


@METHODS.register("adapruner", help="AdaPruner: TPE search over calibration samples and the "
                                    "vector/element Taylor mix (needs a pool and held-out text)")
def prune_adapruner(model, structure: ModelStructure, run, calibration=None, *,
                    storage: str | None = None, report_dir: str | Path | None = None) -> Masks:
    """The search's masks; with ``report_dir``, also its history as JSON and PNG."""
    result = adapruner_search(model, structure, run, calibration, storage=storage)
    if report_dir is not None:
        save_history(result, Path(report_dir) / "adapruner_history.json")
        plot_search_history(result, Path(report_dir) / "adapruner_history.png")
    return result.masks
