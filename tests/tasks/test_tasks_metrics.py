"""Task metrics against hand-computed values."""
from __future__ import annotations

import math

import pytest

from lmprune.errors import LmpruneError
from lmprune.tasks import metrics as m

pytestmark = pytest.mark.usefixtures("one_thread")

PRED, GOLD = [1, 0, 1, 1], [1, 1, 1, 0]  # tp=2, fn=1, fp=1, tn=0


def test_accuracy_f1_mcc_binary() -> None:
    assert m.accuracy(PRED, GOLD) == 0.5
    assert m.binary_f1(PRED, GOLD) == pytest.approx(2 / 3)  # 2tp / (2tp + fp + fn) = 4/6
    # (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = -1 / sqrt(3*3*1*1)
    assert m.matthews_corrcoef(PRED, GOLD) == pytest.approx(-1 / 3)


def test_mcc_edge_and_multiclass() -> None:
    assert m.matthews_corrcoef([0, 1, 1], [0, 1, 1]) == pytest.approx(1.0)
    assert m.matthews_corrcoef([1, 1, 1], [0, 1, 1]) == 0.0  # constant prediction
    # s=4, c=3, p=(2,1,1), t=(1,1,2): (12 - 5) / sqrt((16 - 6)(16 - 6)) = 0.7
    assert m.matthews_corrcoef([0, 1, 2, 0], [0, 1, 2, 2]) == pytest.approx(0.7)
    assert m.binary_f1([0, 0], [0, 0]) == 0.0


def test_correlations() -> None:
    # dx = (-1, 0, 1), dy = (-7/3, -1/3, 8/3): 5 / sqrt(2 * 114/9)
    assert m.pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(15 / math.sqrt(228))
    # ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4): 4.5 / sqrt(4.5 * 5)
    assert m.spearman([1, 2, 2, 3], [10, 20, 30, 40]) == pytest.approx(3 / math.sqrt(10))
    assert m.spearman([3, 1, 2], [30, 10, 20]) == pytest.approx(1.0)
    assert m.pearson([1, 1, 1], [1, 2, 3]) == 0.0


def test_length_mismatch_and_empty_are_errors() -> None:
    with pytest.raises(LmpruneError, match="2 predictions but 1 references"):
        m.accuracy([1, 0], [1])
    with pytest.raises(LmpruneError, match="no examples"):
        m.pearson([], [])


def test_squad_normalize_exact_f1() -> None:
    assert m.normalize_answer("The  Quick, brown FOX!") == "quick brown fox"
    assert m.normalize_answer("an apple a day") == "apple day"
    assert m.squad_exact("the Nile", "Nile.") == 1.0
    assert m.squad_exact("the Nile", "Nile river") == 0.0
    # gold (cat, sat), pred (cat, sat, down): P = 2/3, R = 1 -> F1 = 0.8
    assert m.squad_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    assert m.squad_f1("cat", "dog") == 0.0
    assert m.squad_f1("", "") == 1.0  # unanswerable predicted unanswerable
    assert m.squad_f1("", "Nile") == 0.0 and m.squad_f1("Nile", "") == 0.0


def test_squad_v2_scores() -> None:
    predictions = ["the Nile", "", "Paris France", "x"]
    golds = [["Nile", "river Nile"], [], ["Paris"], ["the"]]  # "the" normalizes to nothing
    scores = m.squad_v2_scores(predictions, golds)
    # exact: 1, 1, 0, 0; f1: 1, 1, 2/3 (P=1/2, R=1), 0 (gold [""] vs "x")
    assert scores["exact"] == pytest.approx(2 / 4)
    assert scores["f1"] == pytest.approx((1 + 1 + 2 / 3 + 0) / 4)
    assert scores["has_ans_f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert scores["no_ans_f1"] == pytest.approx(1 / 2)
    assert "no_ans_f1" not in m.squad_v2_scores(["x"], [["x"]])


def test_rouge_hand_computed() -> None:
    pred, ref = "the cat sat on the mat", "the cat was on the mat"
    scores = m.rouge_scores([pred, "same words here"], [ref, "same words here"])
    # unigrams: 5 of 6 shared; bigrams: the-cat, on-the, the-mat = 3 of 5; LCS "the cat on the mat" = 5
    assert scores["rouge1"] == pytest.approx((5 / 6 + 1) / 2)
    assert scores["rouge2"] == pytest.approx((3 / 5 + 1) / 2)
    assert scores["rougeL"] == pytest.approx((5 / 6 + 1) / 2)
    assert m.rouge_scores(["Cats running."], ["cat runs"])["rouge1"] == pytest.approx(1.0)  # stemmer


def test_correlations_agree_with_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    x = [0.3, 1.2, 1.2, 4.0, 2.5, 0.0, 3.3]
    y = [1.0, 0.5, 2.0, 3.5, 2.5, 0.1, 2.0]
    assert m.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    assert m.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])
