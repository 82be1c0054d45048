"""The normalized dataset schema: one set of column names per task *kind*.

Every loader in :mod:`lmprune.data` (hub benchmark, local file or bundled set) returns a
``datasets.Dataset`` with exactly these columns, so scorers, trainers and evaluators are written
once per kind, never once per dataset.

=================  ==============================================================================
kind               columns
=================  ==============================================================================
classification     ``text``, ``text_pair`` (only for sentence-pair tasks), ``label`` (ClassLabel)
regression         ``text``, ``text_pair``, ``label`` (float; GLUE STS-B)
qa                 ``id``, ``question``, ``context``, ``answers`` = {"text": [...],
                   "answer_start": [...]} (empty lists: unanswerable, SQuAD v2)
summarization      ``document``, ``summary``
text               ``text`` (language modelling, calibration, perplexity)
instruction        ``instruction``, ``input``, ``output`` (Alpaca format)
multiple-choice    ``query``, ``choices`` (list of str), ``label`` (index of the right choice)
=================  ==============================================================================

Conventions: ``label == -1`` marks an unlabeled row (hub test splits). For multiple-choice the
choices are continuations of the query *without* a leading space: score ``query + " " + choice``
(lm-eval's default ``target_delimiter``).
"""
from __future__ import annotations

from dataclasses import dataclass

import datasets

KINDS = (
    "classification",
    "regression",
    "qa",
    "summarization",
    "text",
    "instruction",
    "multiple-choice",
)


@dataclass(frozen=True)
class DatasetInfo:
    """What ``list_datasets()`` reports about one dataset name.

    ``offline`` is True for the bundled sets (vendored in the package, no network needed);
    ``source`` says where the rows come from (``hub:<path>[/<config>]`` or ``bundled:...``);
    ``labels`` holds the class names of classification datasets (index = label id).
    """

    name: str
    kind: str
    description: str
    offline: bool
    splits: tuple[str, ...]
    source: str
    labels: tuple[str, ...] = ()


def _string() -> datasets.Value:
    return datasets.Value("string")


def features_for(
    kind: str, *, labels: tuple[str, ...] = (), pair: bool = False, extra: tuple[str, ...] = ()
) -> datasets.Features:
    """Arrow features of a normalized dataset of ``kind``.

    Declaring them (rather than letting Arrow infer) keeps empty lists typed (SQuAD v2
    unanswerables) and gives classification labels their names. ``extra`` names additional
    string columns a dataset keeps (e.g. ``source`` for the bundled novels).
    """
    if kind in ("classification", "regression"):
        cols = {"text": _string()}
        if pair:
            cols["text_pair"] = _string()
        if kind == "regression":
            cols["label"] = datasets.Value("float32")
        else:
            cols["label"] = datasets.ClassLabel(names=list(labels)) if labels else datasets.Value("int64")
    elif kind == "qa":
        cols = {
            "id": _string(),
            "question": _string(),
            "context": _string(),
            "answers": {
                "text": datasets.List(_string()),
                "answer_start": datasets.List(datasets.Value("int32")),
            },
        }
    elif kind == "summarization":
        cols = {"document": _string(), "summary": _string()}
    elif kind == "text":
        cols = {"text": _string()}
    elif kind == "instruction":
        cols = {"instruction": _string(), "input": _string(), "output": _string()}
    elif kind == "multiple-choice":
        cols = {"query": _string(), "choices": datasets.List(_string()), "label": datasets.Value("int64")}
    else:
        raise ValueError(f"unknown dataset kind {kind!r}; kinds: {', '.join(KINDS)}")
    for name in extra:
        cols[name] = _string()
    return datasets.Features(cols)
