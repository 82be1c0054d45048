"""Extractive-QA features: question + a window of the context, with answer token positions.

The standard BERT/SQuAD preprocessing (Devlin et al., 2019; transformers' ``run_qa.py``): a
context longer than the window is split into overlapping windows (``stride`` tokens shared
by consecutive windows), each a feature. A feature's targets are the token positions of the
first gold answer when it lies wholly inside the window, else the CLS position (which also
stands for "unanswerable", SQuAD v2). Offset mappings (token -> characters) need a fast
tokenizer.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lmprune.errors import LmpruneError
from lmprune.tasks.base import column

Offset = tuple[int, int] | None
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class QAFeatures:
    """Features plus, per feature: its example row, context offsets and CLS position."""

    features: list[dict] = field(default_factory=list)
    example_index: list[int] = field(default_factory=list)
    offsets: list[list[Offset]] = field(default_factory=list)
    cls_index: list[int] = field(default_factory=list)


def check_fast(tokenizer: Any) -> None:
    """Error unless the tokenizer can return offset mappings."""
    if not getattr(tokenizer, "is_fast", False):
        raise LmpruneError(
            f"question answering needs a fast tokenizer (offset mappings); "
            f"{type(tokenizer).__name__} is not one: load it with AutoTokenizer(use_fast=True)"
        )


def window_sizes(tokenizer: Any, max_len: int, max_query_len: int, doc_stride: int) -> tuple[int, int]:
    """``(question token cap, stride)`` that fit ``max_len``.

    The question gets at most ``min(max_query_len, max_len // 2)`` tokens; the stride is
    ``doc_stride`` capped at half the context room left, so every window advances.
    """
    query = min(max_query_len, max_len // 2)
    room = max_len - query - tokenizer.num_special_tokens_to_add(pair=True)
    if room < 2:
        raise LmpruneError(f"max_len={max_len} leaves no room for the context; use a larger max_len")
    return query, max(0, min(doc_stride, room // 2))


def cap_questions(tokenizer: Any, questions: Sequence[str], max_tokens: int) -> list[str]:
    """Questions without leading whitespace, cut after their ``max_tokens``-th token."""
    questions = [q.lstrip() for q in questions]
    encoded = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True,
                        truncation=True, max_length=max_tokens + 1)  # one extra: "too long"
    return [
        q if len(offs) <= max_tokens else q[: offs[max_tokens - 1][1]]
        for q, offs in zip(questions, encoded["offset_mapping"])
    ]


def answer_positions(offsets: Sequence[Offset], answers: dict, cls: int) -> tuple[int, int]:
    """Token positions of the first answer in a window, or ``(cls, cls)`` when it is absent
    (unanswerable) or not wholly inside the window."""
    if not answers["text"]:
        return cls, cls
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    inside = [t for t, o in enumerate(offsets) if o is not None]
    if not inside or offsets[inside[0]][0] > start_char or offsets[inside[-1]][1] < end_char:
        return cls, cls
    start = max(t for t in inside if offsets[t][0] <= start_char)
    end = min(t for t in inside if offsets[t][1] >= end_char)
    return start, end


def build_features(tokenizer: Any, rows: Any, max_len: int, max_query_len: int,
                   doc_stride: int) -> QAFeatures:
    """Windowed features of the QA ``rows`` (columns ``question``, ``context``, ``answers``)."""
    check_fast(tokenizer)
    query, stride = window_sizes(tokenizer, max_len, max_query_len, doc_stride)
    encoded = tokenizer(
        cap_questions(tokenizer, column(rows, "question"), query), column(rows, "context"),
        truncation="only_second", max_length=max_len, stride=stride,
        return_overflowing_tokens=True, return_offsets_mapping=True,
    )
    answers = column(rows, "answers")
    out = QAFeatures()
    for i, ids in enumerate(encoded["input_ids"]):
        example = encoded["overflow_to_sample_mapping"][i]
        sequence = encoded.sequence_ids(i)
        offsets = [tuple(o) if s == 1 else None for o, s in zip(encoded["offset_mapping"][i], sequence)]
        cls = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
        start, end = answer_positions(offsets, answers[example], cls)
        feature = {k: encoded[k][i] for k in MODEL_INPUTS if k in encoded}
        feature.update(start_positions=start, end_positions=end)
        out.features.append(feature)
        out.example_index.append(example)
        out.offsets.append(offsets)
        out.cls_index.append(cls)
    return out
