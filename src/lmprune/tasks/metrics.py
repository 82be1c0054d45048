"""Task metrics, all as fractions: accuracy, F1, MCC, correlations, SQuAD v2 EM/F1, ROUGE.

Every score is returned on the same scale as the quantity it measures, never as a percentage:
accuracy, F1, exact match and ROUGE lie in [0, 1]; correlations (Pearson, Spearman, MCC)
lie in [-1, 1]. The SQuAD functions follow the official SQuAD 2.0 evaluation script
(``evaluate-v2.0.py``: ``normalize_answer``, ``compute_exact``, ``compute_f1``) exactly,
except that it reports percentages.
"""
from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence

from lmprune.errors import LmpruneError


def _check_lengths(a: Sequence, b: Sequence, what: str) -> None:
    if len(a) != len(b):
        raise LmpruneError(f"{what}: {len(a)} predictions but {len(b)} references")
    if not a:
        raise LmpruneError(f"{what}: no examples to score")


# --- classification ---------------------------------------------------------------------


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Fraction of predictions equal to their label."""
    _check_lengths(predictions, labels, "accuracy")
    return sum(int(p == y) for p, y in zip(predictions, labels)) / len(labels)


def binary_f1(predictions: Sequence[int], labels: Sequence[int], positive: int = 1) -> float:
    """F1 of the ``positive`` class (GLUE's F1 for MRPC/QQP); 0 when it is never predicted
    nor present (scikit-learn's ``zero_division=0``)."""
    _check_lengths(predictions, labels, "binary_f1")
    tp = sum(int(p == positive and y == positive) for p, y in zip(predictions, labels))
    fp = sum(int(p == positive and y != positive) for p, y in zip(predictions, labels))
    fn = sum(int(p != positive and y == positive) for p, y in zip(predictions, labels))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def matthews_corrcoef(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Matthews correlation (GLUE's CoLA metric), multiclass form of Gorodkin (2004).

    ``(c*s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2))`` with ``c`` the
    correct count, ``s`` the total, ``p_k``/``t_k`` how often class ``k`` is predicted/true;
    0 when a factor of the denominator is 0 (as scikit-learn).
    """
    _check_lengths(predictions, labels, "matthews_corrcoef")
    s = len(labels)
    c = sum(int(p == y) for p, y in zip(predictions, labels))
    pred, true = Counter(predictions), Counter(labels)
    classes = set(pred) | set(true)
    cov = c * s - sum(pred[k] * true[k] for k in classes)
    denom = (s * s - sum(v * v for v in pred.values())) * (s * s - sum(v * v for v in true.values()))
    return cov / math.sqrt(denom) if denom > 0 else 0.0


# --- regression -------------------------------------------------------------------------


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation coefficient (STS-B's metric); 0 when either side is constant."""
    _check_lengths(x, y, "pearson")
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else 0.0


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start : end + 1]:
            ranks[i] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation: Pearson of the (tie-averaged) ranks."""
    _check_lengths(x, y, "spearman")
    return pearson(_ranks(x), _ranks(y))


# --- SQuAD v2 (official evaluate-v2.0.py) -------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _answer_tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def squad_exact(gold: str, prediction: str) -> float:
    """1.0 when the normalized answers are equal (``compute_exact``)."""
    return float(normalize_answer(gold) == normalize_answer(prediction))


def squad_f1(gold: str, prediction: str) -> float:
    """Token-bag F1 of the normalized answers (``compute_f1``); an empty side scores 1.0
    only when both are empty (unanswerable question predicted unanswerable)."""
    gold_toks, pred_toks = _answer_tokens(gold), _answer_tokens(prediction)
    if not gold_toks or not pred_toks:
        return float(gold_toks == pred_toks)
    same = sum((Counter(gold_toks) & Counter(pred_toks)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def squad_v2_scores(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean ``exact`` and ``f1`` over questions, each the max over the gold answers.

    Gold answers that normalize to nothing are dropped and an unanswerable question (no
    gold left) has the gold ``[""]``, as the official script does. Also reports
    ``has_ans_f1``/``no_ans_f1`` over the answerable/unanswerable questions (when present).
    """
    _check_lengths(predictions, golds, "squad_v2_scores")
    exact, f1, has_ans = [], [], []
    for pred, answers in zip(predictions, golds):
        answers = [a for a in answers if normalize_answer(a)] or [""]
        has_ans.append(answers != [""])
        exact.append(max(squad_exact(a, pred) for a in answers))
        f1.append(max(squad_f1(a, pred) for a in answers))
    scores = {"exact": sum(exact) / len(exact), "f1": sum(f1) / len(f1)}
    for key, wanted in (("has_ans_f1", True), ("no_ans_f1", False)):
        part = [v for v, h in zip(f1, has_ans) if h == wanted]
        if part:
            scores[key] = sum(part) / len(part)
    return scores


# --- ROUGE ------------------------------------------------------------------------------

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure over examples (Lin, 2004), via Google's ``rouge_score``
    package with its Porter stemmer (``use_stemmer=True``), as fractions."""
    _check_lengths(predictions, references, "rouge_scores")
    try:
        from rouge_score import rouge_scorer
    except ImportError as e:
        raise LmpruneError(
            "ROUGE needs the rouge-score package: pip install rouge-score"
        ) from e
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for pred, ref in zip(predictions, references):
        for key, score in scorer.score(ref, pred).items():
            totals[key] += score.fmeasure
    return {key: total / len(predictions) for key, total in totals.items()}
