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
from lmprune.pruners.adapruner import (STUDY_NAME, adapruner_search, plot_search_history,
                                       save_history)
from lmprune.pruners.adapruner_space import (Candidate, candidate_from_params, mix_scores,
                                             repair_indices)
from lmprune.pruners.selection import Scores, select
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
    windows = token_windows(build_tiny_tokenizer("tiny-llama"), TEXT, 12, 16, seed=0)
    return Calibration(samples=windows[:2], heldout=windows[2:4], pool=windows[4:12],
                       dataset="austen", split="train", seq_len=16)


def make_run(*overrides: str):
    return load_config(None, ["prune.method=adapruner", "prune.sparsity=0.5",
                              "prune.structures=[heads,neurons]", "data.num_samples=2",
                              "data.seq_len=16", "adapruner.trials=4", "adapruner.pool_size=8",
                              "adapruner.heldout=2", "adapruner.startup_trials=2",
                              "adapruner.fine=element1", *overrides])


def heldout_ppl(model, structure, masks, calibration) -> float:
    with apply_masks(model, masks, structure):
        return perplexity_of_windows(model, calibration.heldout)


def test_search_returns_the_best_trial_and_records_history(model, structure, calibration,
                                                           tmp_path):
    run = make_run("adapruner.fine=search")
    result = adapruner_search(model, structure, run, calibration, progress=False)

    assert len(result.history) == 4
    values = [h["value"] for h in result.history]
    assert result.best_value == min(values)
    assert [h["best_so_far"] for h in result.history] == [min(values[:i + 1]) for i in range(4)]
    # the returned masks are the best trial's: its objective, recomputed, is the recorded best
    assert heldout_ppl(model, structure, result.masks, calibration) == pytest.approx(
        result.best_value, rel=1e-9)
    assert result.masks.is_binary()
    for site in structure.attention:  # 50% of the query heads in every kv group
        kept = result.masks.heads[site.name].view(site.num_kv_heads, site.group_size).sum(1)
        assert kept.tolist() == [site.group_size // 2] * site.num_kv_heads
    for site in structure.ffn:
        assert int(result.masks.neurons[site.name].sum()) == site.width // 2
    # every trial calibrated on exactly num_samples distinct pool windows
    for h in result.history:
        cand = candidate_from_params(h["params"], 2, len(calibration.pool), "search")
        assert h["samples"] == list(cand.samples) and len(set(h["samples"])) == 2

    saved = json.loads(save_history(result, tmp_path / "h.json").read_text())
    assert saved["best_value"] == result.best_value and len(saved["trials"]) == 4
    assert saved["best_params"] == result.best_params
    png = plot_search_history(result, tmp_path / "h.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_best_masks_are_the_mixed_real_taylor_scores(model, structure, calibration):
    """Recompute the best trial by hand: real Taylor metrics on its samples, mixed as
    α1·s1·I_vector + α2·s2·I_element1, uniform top-k selection."""
    run = make_run("adapruner.trials=3")
    result = adapruner_search(model, structure, run, calibration, progress=False)
    best = result.best_candidate
    assert result.best_params["alpha1"] == best["alpha1"]
    metrics = taylor_metrics(model, structure, calibration.pool[best["samples"]],
                             ("vector", "element1"), kinds=("heads", "neurons"), progress=False)
    w1 = best["alpha1"] * best["scale_coarse"]
    w2 = best["alpha2"] * best["scale_fine"]
    assert best["scale_fine"] == result.best_params["scale_element1"]
    mixed = Scores(
        heads={k: w1 * v + w2 * metrics["element1"].heads[k] for k, v in metrics["vector"].heads.items()},
        neurons={k: w1 * v + w2 * metrics["element1"].neurons[k]
                 for k, v in metrics["vector"].neurons.items()})
    expected = select(structure, mixed, 0.5, ["heads", "neurons"])
    for kind in ("heads", "neurons"):
        for site, mask in getattr(expected, kind).items():
            assert torch.equal(getattr(result.masks, kind)[site], mask), (kind, site)
    assert "fine" not in result.best_params  # fixed fine metric is not a search parameter


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
    with pytest.raises(LmpruneError, match="sparsity"):
        adapruner_search(model, structure, make_run("prune.sparsity=0.25"), calibration,
                         storage=str(db), progress=False)


def test_mixing_formula_by_hand():
    coarse = Scores(heads={"a": torch.tensor([1.0, 2.0])}, neurons={"f": torch.tensor([4.0])},
                    layers={"layers.0": 3.0}, hidden=torch.tensor([0.5, 0.0]))
    fine = Scores(heads={"a": torch.tensor([10.0, 0.0])}, neurons={"f": torch.tensor([-2.0])},
                  layers={"layers.0": 4.0}, hidden=torch.tensor([0.0, 8.0]))
    # w1 = α1·s1 = 0.5·2 = 1, w2 = α2·s2 = 0.25·0.1 = 0.025
    mixed = mix_scores(coarse, fine, Candidate((0,), 0.5, 0.25, "element1", 2.0, 0.1))
    assert torch.allclose(mixed.heads["a"], torch.tensor([1.25, 2.0], dtype=torch.float64))
    assert torch.allclose(mixed.neurons["f"], torch.tensor([3.95], dtype=torch.float64))
    assert mixed.layers["layers.0"] == pytest.approx(3.1)
    assert torch.allclose(mixed.hidden, torch.tensor([0.5, 0.2], dtype=torch.float64))
    only_fine = mix_scores(coarse, fine, Candidate((0,), 0.0, 1.0, "element1", 1e6, 1e-3))
    assert torch.allclose(only_fine.heads["a"], torch.tensor([1e-2, 0.0], dtype=torch.float64))


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
    assert len(history["trials"]) == 2
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


def test_pool_smaller_than_num_samples_is_refused(model, structure, calibration):
    with pytest.raises(LmpruneError, match="pool has 8 samples, fewer than the 9"):
        adapruner_search(model, structure, make_run("data.num_samples=9"), calibration,
                         progress=False)


def test_non_finite_perplexity_is_ranked_last(model, structure, calibration, monkeypatch):
    import lmprune.pruners.adapruner as module

    monkeypatch.setattr(module, "perplexity_of_windows", lambda m, w: float("nan"))
    result = adapruner_search(model, structure, make_run("adapruner.trials=2"), calibration,
                              progress=False)
    assert [h["value"] for h in result.history] == [math.inf, math.inf]
