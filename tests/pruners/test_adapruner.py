"""AdaPruner: TPE search over calibration samples and the vector/element Taylor mix."""
from __future__ import annotations

import json
import math

import optuna
import pytest
import torch

from lmprune.arch import describe
from lmprune.config import load_config
from lmprune.data.calibration import Calibration, token_windows
from lmprune.errors import LmpruneError
from lmprune.evaluation.perplexity import perplexity_of_windows
from lmprune.pruners.adapruner import (STUDY_NAME, adapruner_search, check_calibration,
                                       make_sampler, plot_search_history, save_history)
from lmprune.pruners.adapruner_space import (MIX_STEPS, Candidate, Space,
                                             candidate_from_params, mix_scores,
                                             repair_indices, suggest_candidate)
from lmprune.pruners.param_budget import select_params
from lmprune.pruners.selection import Scores
from lmprune.registry import METHODS, load_builtin_methods
from lmprune.scorers.taylor import taylor_metrics
from lmprune.structures import apply_masks
from lmprune.zoo import build_tiny, build_tiny_tokenizer

TEXT = [
    "It is a truth universally acknowledged, that a single man must be in want of a wife.",
    "Emma Woodhouse, handsome, clever, and rich, seemed to unite some of the best blessings.",
    "The family of Dashwood had long been settled in Sussex, at Norland Park.",
    "No one who had ever seen Catherine Morland in her infancy would have supposed her born.",
    "Sir Walter Elliot, of Kellynch Hall, never took up any book but the Baronetage.",
    "About thirty years ago Miss Maria Ward had the good luck to captivate Sir Thomas.",
    "Mr. Bennet was so odd a mixture of quick parts, sarcastic humour and caprice.",
    "Elinor, the eldest daughter, possessed a strength of understanding and coolness.",
    "Her father was a clergyman, without being neglected, or poor, and very respectable.",
    "Anne, with an elegant mind and sweet character, was nobody with either father or sister.",
    "Mrs. Jennings was a widow with an ample jointure, and had only two daughters.",
    "She was the youngest of the two daughters of a most affectionate, indulgent father.",
]


@pytest.fixture(scope="module")
def model():
    return build_tiny("tiny-llama")


@pytest.fixture(scope="module")
def structure(model):
    return describe(model)


@pytest.fixture(scope="module")
def calibration():
    windows = token_windows(build_tiny_tokenizer("tiny-llama"), TEXT, 16, 16, seed=0)
    return Calibration(samples=windows[:2], heldout=windows[2:4], pool=windows[4:12],
                       dataset="austen", split="train", seq_len=16, confirm=windows[12:16])


def make_run(*overrides: str):
    return load_config(None, ["prune.method=adapruner", "prune.sparsity=0.4",
                              "prune.structures=[heads,neurons]", "data.num_samples=2",
                              "data.seq_len=16", "adapruner.trials=4", "adapruner.pool_size=8",
                              "adapruner.heldout=2", "adapruner.startup_trials=2",
                              "adapruner.fine=element1", "adapruner.confirm_top=0",
                              *overrides])


def pool_of(calibration):
    return torch.cat([calibration.samples, calibration.pool])


def ranking(scores: torch.Tensor) -> list[int]:
    return scores.double().argsort(stable=True).tolist()


def heldout_ppl(model, structure, masks, calibration) -> float:
    with apply_masks(model, masks, structure):
        return perplexity_of_windows(model, calibration.heldout)


def test_search_returns_the_best_trial_and_records_history(model, structure, calibration,
                                                           tmp_path):
    run = make_run("adapruner.fine=search", "adapruner.trials=6")
    probe = calibration.pool[:2]
    result = adapruner_search(model, structure, run, calibration, progress=False, probe=probe)

    assert len(result.history) == 6
    values = [h["value"] for h in result.history]
    assert result.best_value == min(values)
    assert [h["best_so_far"] for h in result.history] == [min(values[:i + 1]) for i in range(6)]
    # the returned masks are the best trial's: its objective, recomputed, is the recorded best
    assert heldout_ppl(model, structure, result.masks, calibration) == pytest.approx(
        result.best_value, rel=1e-9)
    assert result.masks.is_binary()
    for h in result.history:
        space = Space.from_run(run, len(pool_of(calibration)))
        cand = candidate_from_params(h["params"], space)
        assert h["samples"] == list(cand.samples) and len(set(h["samples"])) == 2
        assert h["candidate"]["balance"] == cand.balance and h["probe"] > 0
    # warm start: the pure fine rankings of each fine metric, then the pure coarse one
    starts = [h for h in result.history if h["warm_start"]]
    assert [(h["candidate"]["fine"], h["candidate"]["balance"]) for h in starts] == \
        [("element1", 1.0), ("element2", 1.0), ("param_second", 1.0), ("element1", 0.0)]
    assert all(h["samples"] == [0, 1] for h in starts)

    saved = json.loads(save_history(result, tmp_path / "h.json").read_text())
    assert saved["best_value"] == result.best_value and len(saved["trials"]) == 6
    assert saved["best_params"] == result.best_params
    assert saved["objective_probe_spearman"] == pytest.approx(
        result.objective_probe_correlation())
    png = plot_search_history(result, tmp_path / "h.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_warm_start_reproduces_the_taylor_method(model, structure, calibration):
    """Trial 0 calibrates on the run's own samples and ranks by the pure fine metric: exactly
    what method taylor with that importance prunes."""
    run = make_run("adapruner.trials=1")
    result = adapruner_search(model, structure, run, calibration, progress=False)
    load_builtin_methods()
    taylor = load_config(None, ["prune.method=taylor", "prune.sparsity=0.4",
                                "prune.structures=[heads,neurons]", "taylor.importance=element1"])
    expected = METHODS.get("taylor")(model, structure, taylor, calibration)
    for kind in ("heads", "neurons"):
        for site, mask in getattr(expected, kind).items():
            assert torch.equal(getattr(result.masks, kind)[site], mask), (kind, site)


def test_best_masks_are_the_mixed_real_taylor_scores(model, structure, calibration):
    """Recompute the best trial by hand: real Taylor metrics on its samples, each divided by
    its mean over a kind's units, mixed (1 - balance) : balance, the parameter budget."""
    run = make_run("adapruner.trials=5", "adapruner.warm_start=false")
    result = adapruner_search(model, structure, run, calibration, progress=False)
    best = result.best_candidate
    metrics = taylor_metrics(model, structure, pool_of(calibration)[best["samples"]],
                             ("vector", "element1"), kinds=("heads", "neurons"), progress=False)

    def aligned(metric, kind):
        table = getattr(metrics[metric], kind)
        mean = torch.cat(list(table.values())).mean()
        return {k: v / mean for k, v in table.items()}

    mixed = Scores(**{kind: {k: (1 - best["balance"]) * v + best["balance"] *
                             aligned("element1", kind)[k]
                             for k, v in aligned("vector", kind).items()}
                      for kind in ("heads", "neurons")})
    expected = select_params(model, structure, mixed, 0.4, ["heads", "neurons"]).masks
    for kind in ("heads", "neurons"):
        for site, mask in getattr(expected, kind).items():
            assert torch.equal(getattr(result.masks, kind)[site], mask), (kind, site)
    assert "fine" not in result.best_params  # fixed fine metric is not a search parameter


def test_the_space_holds_both_pure_rankings_and_mixes(model, structure, calibration):
    """balance 0 ranks by the coarse metric alone, balance 1 by the fine one, a middle value
    by neither; every grid step is a possible suggestion."""
    space = Space(10, 2, "element1", {}, search_samples=False)
    metrics = taylor_metrics(model, structure, calibration.samples, ("vector", "element1"),
                             kinds=("heads", "neurons"), progress=False)
    site = "layers.0.ffn"
    orders = {}
    for step in (0, MIX_STEPS // 2, MIX_STEPS):
        cand = suggest_candidate(optuna.trial.FixedTrial({"balance_step": step}), space)
        assert cand.balance == step / MIX_STEPS
        orders[step] = ranking(mix_scores(metrics["vector"], metrics["element1"], cand).neurons[site])
    assert orders[0] == ranking(metrics["vector"].neurons[site])
    assert orders[MIX_STEPS] == ranking(metrics["element1"].neurons[site])
    assert orders[MIX_STEPS // 2] not in (orders[0], orders[MIX_STEPS])
    study = optuna.create_study()
    study.optimize(lambda t: suggest_candidate(t, space).balance, n_trials=1)
    grid = study.trials[0].distributions["balance_step"]
    assert (grid.low, grid.high, grid.step) == (0, MIX_STEPS, 1)


def test_mixing_formula_by_hand():
    coarse = Scores(heads={"a": torch.tensor([1.0, 3.0])}, neurons={"f": torch.tensor([4.0, 0.0])},
                    hidden=torch.tensor([0.5, 1.5]))
    fine = Scores(heads={"a": torch.tensor([10.0, 30.0])}, neurons={"f": torch.tensor([1.0, 3.0])},
                  hidden=torch.tensor([8.0, 0.0]))
    cand = Candidate((0,), 0.25, "element1", 2.0, 1.0)  # α1 = 0.75, α2 = 0.25
    # aligned: each metric / its mean over the kind's units (heads: 2 and 20, neurons: 2, 2)
    mixed = mix_scores(coarse, fine, cand)
    assert mixed.heads["a"].tolist() == pytest.approx([0.75 * 2 * 0.5 + 0.25 * 0.5,
                                                       0.75 * 2 * 1.5 + 0.25 * 1.5])
    assert mixed.neurons["f"].tolist() == pytest.approx([0.75 * 2 * 2 + 0.25 * 0.5,
                                                         0.25 * 1.5])
    assert mixed.hidden.tolist() == pytest.approx([0.75 * 2 * 0.5 + 0.25 * 2, 0.75 * 2 * 1.5])
    raw = mix_scores(coarse, fine, cand, align=False)  # align=false: raw metrics
    assert raw.heads["a"].tolist() == pytest.approx([0.75 * 2 * 1 + 0.25 * 10,
                                                     0.75 * 2 * 3 + 0.25 * 30])


def test_switches_change_the_search_as_documented(model, structure, calibration):
    n_pool = len(pool_of(calibration))
    fixed = adapruner_search(model, structure, make_run("adapruner.search_samples=false",
                                                        "adapruner.warm_start=false"),
                             calibration, progress=False)
    assert all(h["samples"] == [0, 1] and "sample_0" not in h["params"] for h in fixed.history)
    unmixed = adapruner_search(model, structure, make_run("adapruner.search_mix=false"),
                               calibration, progress=False)
    assert all(h["candidate"]["balance"] == 0.5 and "balance_step" not in h["params"]
               for h in unmixed.history)
    cold = adapruner_search(model, structure, make_run("adapruner.warm_start=false"),
                            calibration, progress=False)
    assert not any(h["warm_start"] for h in cold.history)
    assert any(s != [0, 1] for s in (h["samples"] for h in cold.history))
    assert isinstance(make_sampler("random", 2, 0), optuna.samplers.RandomSampler)
    assert isinstance(make_sampler("tpe", 2, 0), optuna.samplers.TPESampler)
    rand = adapruner_search(model, structure, make_run("adapruner.sampler=random",
                                                       "adapruner.warm_start=false",
                                                       "adapruner.trials=6"),
                            calibration, progress=False)
    tpe = adapruner_search(model, structure, make_run("adapruner.warm_start=false",
                                                      "adapruner.trials=6"),
                           calibration, progress=False)
    assert [h["params"] for h in rand.history] != [h["params"] for h in tpe.history]
    assert all(0 <= i < n_pool for h in rand.history for i in h["samples"])


def test_resume_from_storage_keeps_finished_trials(model, structure, calibration, tmp_path):
    db = tmp_path / "study.db"
    first = adapruner_search(model, structure, make_run("adapruner.trials=2"), calibration,
                             storage=str(db), progress=False)
    assert len(first.history) == 2
    # an interrupted trial left RUNNING in the file must not count
    optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{db}").ask()
    resumed = adapruner_search(model, structure, make_run("adapruner.trials=4"), calibration,
                               storage=str(db), progress=False)
    assert len(resumed.history) == 4
    assert resumed.history[:2] == first.history
    assert resumed.best_value == min(h["value"] for h in resumed.history)
    states = [t.state.name for t in optuna.load_study(study_name=STUDY_NAME,
                                                      storage=f"sqlite:///{db}").trials]
    assert states.count("COMPLETE") == 4 and states.count("FAIL") == 1
    # a finished study only rebuilds the best masks
    again = adapruner_search(model, structure, make_run("adapruner.trials=4"), calibration,
                             storage=str(db), progress=False)
    assert again.history == resumed.history
    for site, mask in resumed.masks.neurons.items():
        assert torch.equal(again.masks.neurons[site], mask)
    with pytest.raises(LmpruneError, match="settings"):
        adapruner_search(model, structure, make_run("prune.sparsity=0.25"), calibration,
                         storage=str(db), progress=False)


def test_duplicate_sample_choices_are_repaired():
    assert repair_indices([3, 3, 7], 8) == (3, 4, 7)
    assert repair_indices([7, 7, 0], 8) == (0, 1, 7)
    assert repair_indices([5, 1], 8) == (1, 5)
    with pytest.raises(ValueError):
        repair_indices([0, 1, 2], 2)


def test_registered_method_writes_its_report(model, structure, calibration, tmp_path):
    load_builtin_methods()
    run = make_run("adapruner.trials=2")
    masks = METHODS.get("adapruner")(model, structure, run, calibration, report_dir=tmp_path)
    assert masks.is_binary() and set(masks.neurons) == {s.name for s in structure.ffn}
    history = json.loads((tmp_path / "adapruner_history.json").read_text())
    assert len(history["trials"]) == 2 and history["best_trial"] in (0, 1)
    assert all({"params", "value", "candidate", "best_so_far"} <= set(t) for t in history["trials"])
    assert (tmp_path / "adapruner_history.png").stat().st_size > 0
    assert heldout_ppl(model, structure, masks, calibration) == pytest.approx(
        history["best_value"], rel=1e-9)


@pytest.mark.parametrize("missing", ["calibration", "pool", "heldout"])
def test_missing_pool_or_heldout_says_how_to_build_it(model, structure, calibration, missing):
    cal = None if missing == "calibration" else Calibration(
        samples=calibration.samples, dataset="austen", split="train", seq_len=16,
        heldout=None if missing == "heldout" else calibration.heldout,
        pool=None if missing == "pool" else calibration.pool)
    with pytest.raises(LmpruneError, match=r"build_calibration\(.*pool=run.adapruner.pool_size"):
        adapruner_search(model, structure, make_run(), cal, progress=False)


def test_pool_starts_with_the_calibration_samples(model, structure, calibration):
    pool, heldout = check_calibration(calibration, make_run())
    assert torch.equal(pool[:2], calibration.samples) and torch.equal(pool[2:], calibration.pool)
    with pytest.raises(LmpruneError, match="pool has 10 samples, fewer than the 11"):
        adapruner_search(model, structure, make_run("data.num_samples=11"), calibration,
                         progress=False)


def test_non_finite_perplexity_is_ranked_last(model, structure, calibration, monkeypatch):
    import lmprune.pruners.adapruner as module

    monkeypatch.setattr(module, "perplexity_of_windows", lambda m, w: float("nan"))
    result = adapruner_search(model, structure, make_run("adapruner.trials=2"), calibration,
                              progress=False)
    assert [h["value"] for h in result.history] == [math.inf, math.inf]


def test_confirmation_round_chooses_by_fresh_windows(model, structure, calibration, tmp_path):
    """The best confirm_top distinct trials by the objective are scored again on the
    confirmation windows; the chosen trial is the best there, and its masks are returned."""
    run = make_run("adapruner.fine=search", "adapruner.trials=8", "adapruner.confirm_top=3",
                   "adapruner.consensus=off")
    result = adapruner_search(model, structure, run, calibration, progress=False)
    by_value = sorted(result.history, key=lambda h: (h["value"], h["number"]))
    distinct, seen = [], set()
    for h in by_value:
        key = json.dumps(h["candidate"], sort_keys=True)
        if key not in seen:
            seen.add(key)
            distinct.append(h["number"])
    confirmed = {h["number"]: h["confirm"] for h in result.history if h["confirm"] is not None}
    assert sorted(confirmed) == sorted(distinct[:3])
    space = Space.from_run(run, len(pool_of(calibration)))
    from lmprune.pruners.adapruner import _Objective
    objective = _Objective(model, structure, run, pool_of(calibration), calibration.heldout)
    for number, value in confirmed.items():  # each confirmation value, recomputed by hand
        h = next(t for t in result.history if t["number"] == number)
        masks = objective.masks(candidate_from_params(h["params"], space))
        with apply_masks(model, masks, structure):
            assert perplexity_of_windows(model, calibration.confirm) == pytest.approx(
                value, rel=1e-9)
    chosen = min(confirmed, key=lambda n: (confirmed[n], n))
    assert result.best_trial == chosen and result.confirm_value == confirmed[chosen]
    assert result.search_best_trial == by_value[0]["number"]
    with apply_masks(model, result.masks, structure):
        assert perplexity_of_windows(model, calibration.confirm) == pytest.approx(
            result.confirm_value, rel=1e-9)
    saved = json.loads(save_history(result, tmp_path / "h.json").read_text())
    assert saved["best_trial"] == chosen and saved["search_best_trial"] == by_value[0]["number"]
    line = result.describe()
    assert line.startswith(f"adapruner: chose trial {chosen} of 8 ")
    assert "best of 3 trials scored again on fresh windows" in line


def test_confirmation_on_the_objective_windows_keeps_the_search_choice(model, structure,
                                                                      calibration):
    """Scored again on the very windows of the objective, the round cannot change the choice."""
    same = Calibration(samples=calibration.samples, heldout=calibration.heldout,
                       pool=calibration.pool, confirm=calibration.heldout, dataset="austen",
                       split="train", seq_len=16)
    run = make_run("adapruner.fine=search", "adapruner.trials=6", "adapruner.confirm_top=4",
                   "adapruner.consensus=off")
    result = adapruner_search(model, structure, run, same, progress=False)
    assert result.best_trial == result.search_best_trial
    assert result.confirm_value == pytest.approx(result.best_value, rel=1e-9)


def test_confirmation_round_settings_are_checked(model, structure, calibration):
    no_confirm = Calibration(samples=calibration.samples, heldout=calibration.heldout,
                             pool=calibration.pool, dataset="austen", split="train", seq_len=16)
    with pytest.raises(LmpruneError, match=r"confirm_windows\(\)"):
        adapruner_search(model, structure, make_run("adapruner.confirm_top=3"), no_confirm,
                         progress=False)
    off = adapruner_search(model, structure, make_run("adapruner.confirm_top=1"), no_confirm,
                           progress=False)
    assert off.confirm_value is None and off.best_trial == off.search_best_trial
    assert off.describe().endswith(f"(held-out perplexity {off.best_value:.4g})")
    with pytest.raises(LmpruneError, match="confirm_top: must be >= 0"):
        make_run("adapruner.confirm_top=-1")
    with pytest.raises(LmpruneError, match="needs at least 1 window"):
        make_run("adapruner.confirm_top=3", "adapruner.confirm=0")
    assert make_run("adapruner.confirm_top=0", "adapruner.confirm=0").adapruner.confirm_windows() == 0
    assert make_run("adapruner.confirm_top=2").adapruner.confirm_windows() == 64


def test_confirmation_windows_are_fresh_and_leave_the_others_unchanged():
    """build_calibration draws confirmation windows after the pool: disjoint from every
    other window, and asking for them changes no sample, held-out or pool window."""
    from lmprune.data.calibration import build_calibration
    from lmprune.recipes.prune import calibration_for

    tokenizer = build_tiny_tokenizer("tiny-llama")
    plain = build_calibration(tokenizer, num_samples=3, seq_len=16, heldout=4, pool=5,
                              max_texts=300)
    full = build_calibration(tokenizer, num_samples=3, seq_len=16, heldout=4, pool=5,
                             confirm=6, max_texts=300)
    assert plain.confirm is None and full.confirm.shape == (6, 16)
    for name in ("samples", "heldout", "pool"):
        assert torch.equal(getattr(plain, name), getattr(full, name)), name
    others = {tuple(w) for w in torch.cat([full.samples, full.heldout, full.pool]).tolist()}
    assert not others & {tuple(w) for w in full.confirm.tolist()}
    assert "6 confirmation" in full.describe()
    run = load_config(None, ["prune.method=adapruner", "data.num_samples=2", "data.seq_len=16",
                             "adapruner.pool_size=3", "adapruner.heldout=2",
                             "adapruner.confirm=4"])
    assert len(calibration_for(run, tokenizer).confirm) == 4
    run = load_config(None, ["prune.method=adapruner", "data.num_samples=2", "data.seq_len=16",
                             "adapruner.pool_size=3", "adapruner.heldout=2",
                             "adapruner.confirm_top=0"])
    assert calibration_for(run, tokenizer).confirm is None


def test_consensus_formula_by_hand():
    from lmprune.pruners.adapruner_space import consensus_scores

    a = Scores(heads={"s": torch.tensor([1.0, 3.0])}, neurons={"f": torch.tensor([2.0, 6.0])})
    b = Scores(heads={"s": torch.tensor([30.0, 10.0])}, neurons={"f": torch.tensor([1.0, 1.0])})
    mixed = consensus_scores([a, b])
    # each divided by its mean per kind (a: heads 2, neurons 4; b: heads 20, neurons 1), averaged
    assert mixed.heads["s"].tolist() == pytest.approx([(0.5 + 1.5) / 2, (1.5 + 0.5) / 2])
    assert mixed.neurons["f"].tolist() == pytest.approx([(0.5 + 1) / 2, (1.5 + 1) / 2])
    with pytest.raises(ValueError):
        consensus_scores([])


def test_consensus_of_the_confirmed_trials_competes_on_the_confirmation_windows(
        model, structure, calibration):
    from lmprune.pruners.adapruner import _Objective
    from lmprune.pruners.adapruner_space import consensus_scores

    run = make_run("adapruner.fine=search", "adapruner.trials=8", "adapruner.confirm_top=3",
                   "adapruner.consensus=compete")
    result = adapruner_search(model, structure, run, calibration, progress=False)
    confirmed = sorted(h["number"] for h in result.history if h["confirm"] is not None)
    assert result.consensus_of == confirmed
    objective = _Objective(model, structure, run, pool_of(calibration), calibration.heldout)
    space = Space.from_run(run, len(pool_of(calibration)))
    trials = {h["number"]: h for h in result.history}
    scores = [objective.mixed(candidate_from_params(trials[n]["params"], space))
              for n in confirmed]
    masks = objective.masks(consensus_scores(scores))
    with apply_masks(model, masks, structure):
        assert perplexity_of_windows(model, calibration.confirm) == pytest.approx(
            result.consensus_value, rel=1e-9)
    assert result.uses_consensus == (result.consensus_value < result.confirm_value)
    expected = masks if result.uses_consensus else objective.masks(
        candidate_from_params(trials[result.best_trial]["params"], space))
    for site, mask in expected.neurons.items():
        assert torch.equal(result.masks.neurons[site], mask)
    assert "consensus of trials" in result.describe()
    always = adapruner_search(model, structure, make_run(
        "adapruner.fine=search", "adapruner.trials=8", "adapruner.confirm_top=3",
        "adapruner.consensus=always"), calibration, progress=False)
    assert always.uses_consensus and always.consensus_value == result.consensus_value
    for site, mask in masks.neurons.items():
        assert torch.equal(always.masks.neurons[site], mask)
    off = adapruner_search(model, structure, make_run(
        "adapruner.fine=search", "adapruner.trials=8", "adapruner.confirm_top=3",
        "adapruner.consensus=off"), calibration, progress=False)
    assert off.consensus_value is None and not off.uses_consensus and not off.consensus_of
