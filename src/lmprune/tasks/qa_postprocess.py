"""From start/end logits to answer strings (SQuAD v2 post-processing, as transformers'
``utils_qa.postprocess_qa_predictions`` and the BERT reference implementation).

Per example, over all of its features: the ``n_best`` highest start and end logits among
context tokens give candidate spans (start <= end, at most ``max_answer_length`` tokens);
the best scores ``start + end``. The null ("unanswerable") score is the lowest
``start[CLS] + end[CLS]`` over the example's features; the prediction is ``""`` when the
null score beats the best span by more than ``null_threshold``, else the span's text cut
from the context by the offset mapping.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lmprune.errors import LmpruneError


@dataclass(frozen=True)
class SpanSearch:
    """Post-processing settings (the defaults of the BERT and transformers scripts)."""

    n_best: int = 20
    max_answer_length: int = 30
    null_threshold: float = 0.0


def _top(logits: Sequence[float], candidates: list[int], n: int) -> list[int]:
    return sorted(candidates, key=lambda t: logits[t], reverse=True)[:n]


def best_span(start: Sequence[float], end: Sequence[float], offsets: Sequence, search: SpanSearch
              ) -> tuple[float, tuple[int, int] | None]:
    """``(score, (start_char, end_char))`` of one feature's best span; ``(-inf, None)`` if none."""
    context = [t for t, o in enumerate(offsets) if o is not None]
    best: tuple[float, tuple[int, int] | None] = (float("-inf"), None)
    for s in _top(start, context, search.n_best):
        for e in _top(end, context, search.n_best):
            if e < s or e - s + 1 > search.max_answer_length:
                continue
            score = float(start[s]) + float(end[e])
            if score > best[0]:
                best = (score, (offsets[s][0], offsets[e][1]))
    return best


def predict_answers(contexts: Sequence[str], example_index: Sequence[int], offsets: Sequence[Sequence],
                    cls_index: Sequence[int], start_logits: Sequence[Sequence[float]],
                    end_logits: Sequence[Sequence[float]], search: SpanSearch = SpanSearch()) -> list[str]:
    """One answer string per context (``""`` = unanswerable), from per-feature logits."""
    if not len(example_index) == len(offsets) == len(start_logits) == len(end_logits) == len(cls_index):
        raise LmpruneError("QA post-processing: features, offsets and logits differ in number")
    best = [(float("-inf"), None)] * len(contexts)
    null = [float("inf")] * len(contexts)
    for i, example in enumerate(example_index):
        start, end = start_logits[i], end_logits[i]
        null[example] = min(null[example], float(start[cls_index[i]]) + float(end[cls_index[i]]))
        candidate = best_span(start, end, offsets[i], search)
        if candidate[0] > best[example][0]:
            best[example] = candidate
    answers = []
    for context, (score, span), null_score in zip(contexts, best, null):
        if span is None or null_score - score > search.null_threshold:
            answers.append("")
        else:
            answers.append(context[span[0] : span[1]])
    return answers
