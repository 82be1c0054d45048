"""Row functions that turn a benchmark's raw columns into lmprune's normalized schema.

Loading is a two-step pipeline per row: the dataset table (:mod:`lmprune.data.hub_tables`)
first picks raw columns under role names (``{"text": "sentence"}``), an optional per-dataset
function below rearranges them (only where a rename is not enough: prompts for zero-shot tasks),
then :func:`coerce_row` makes types uniform for the kind (labels to ints, ``None`` to ``""``,
answers to ``{"text": [...], "answer_start": [...]}``). Raw values may arrive as hub types or as
strings from a local CSV file, so every function accepts both.

The multiple-choice prompts follow lm-evaluation-harness 0.4 task definitions, so zero-shot
numbers are comparable with published ones.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

from lmprune.errors import LmpruneError

Row = dict[str, Any]


def _maybe_json(value: Any) -> Any:
    """Nested columns (lists, dicts) written to a CSV cell come back as JSON text: decode them."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def to_label(value: Any, names: tuple[str, ...] = ()) -> int:
    """A class index from an int, a bool, a numeric string or a label name; -1 when missing."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return -1
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        stripped = value.strip()
        if stripped in names:
            return names.index(stripped)
        if stripped.lower() in ("true", "false"):
            return int(stripped.lower() == "true")
        try:
            value = float(stripped)
        except ValueError:
            raise LmpruneError(
                f"label {value!r} is neither a number nor one of the label names {list(names)}"
            ) from None
    label = int(value)
    if names and not -1 <= label < len(names):
        raise LmpruneError(f"label {label} out of range for label names {list(names)}")
    return label


def _answers(value: Any) -> dict[str, list]:
    """SQuAD answers as {"text": [...], "answer_start": [...]}, from the hub's dict of lists or
    the original JSON's list of {"text", "answer_start"} dicts."""
    value = _maybe_json(value)
    if not value:
        return {"text": [], "answer_start": []}
    if isinstance(value, list):
        return {"text": [str(a["text"]) for a in value], "answer_start": [int(a["answer_start"]) for a in value]}
    return {"text": [str(t) for t in value["text"]], "answer_start": [int(s) for s in value["answer_start"]]}


def coerce_row(kind: str, row: Row, labels: tuple[str, ...] = ()) -> Row:
    """Uniform types for a row already under normalized column names."""
    out: Row = {}
    for key, value in row.items():
        if key == "label" and kind == "regression":
            out[key] = -1.0 if value is None or value == "" else float(value)
        elif key == "label":
            out[key] = to_label(value, labels)
        elif key == "answers":
            out[key] = _answers(value)
        elif key == "choices":
            out[key] = [_text(c) for c in _maybe_json(value)]
        else:
            out[key] = _text(value)
    return out


# --- multiple-choice prompts (lm-eval 0.4 conventions) -------------------------------------


def boolq(row: Row) -> Row:
    """google/boolq (``answer`` is a bool) -> a yes/no question about the passage."""
    return {
        "query": f"{_text(row['passage'])}\nQuestion: {_text(row['question'])}?\nAnswer:",
        "choices": ["no", "yes"],
        "label": to_label(row["answer"]),
    }


def piqa(row: Row) -> Row:
    """Physical commonsense: pick the solution that achieves the goal."""
    return {
        "query": f"Question: {_text(row['goal'])}\nAnswer:",
        "choices": [row["sol1"], row["sol2"]],
        "label": row["label"],
    }


def _hellaswag_clean(text: str) -> str:
    """lm-eval's cleanup of WikiHow artifacts in HellaSwag ("[title]", "[step]", double spaces)."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def hellaswag(row: Row) -> Row:
    """Sentence completion: context = activity label + ctx_a + capitalized ctx_b."""
    ctx = _text(row["ctx_a"]) + " " + _text(row["ctx_b"]).capitalize()
    return {
        "query": _hellaswag_clean(_text(row["activity_label"]) + ": " + ctx),
        "choices": [_hellaswag_clean(_text(e)) for e in _maybe_json(row["endings"])],
        "label": row["label"],
    }


def winogrande(row: Row) -> Row:
    """Fill the blank ``_`` with option1/option2.

    lm-eval scores the shared suffix given each filled-in prefix ("partial" scoring), which does
    not fit one query + choices; here the query is the text before the blank and each choice is
    the option followed by the rest of the sentence, so both options are scored on the same
    context (full-continuation scoring). Accuracy differs slightly from lm-eval's winogrande.
    """
    sentence = _text(row["sentence"])
    blank = sentence.find("_")
    if blank < 0:
        raise LmpruneError(f"winogrande sentence has no blank '_': {sentence!r}")
    prefix, suffix = sentence[:blank].rstrip(), sentence[blank + 1 :]
    answer = _text(row["answer"]).strip()
    return {
        "query": prefix,
        "choices": [_text(row["option1"]) + suffix, _text(row["option2"]) + suffix],
        "label": int(answer) - 1 if answer else -1,
    }


def _choice_index(choices: Any, key: Any) -> tuple[list[str], int]:
    """ARC/OpenBookQA ``choices`` = {"text": [...], "label": ["A", ...]} and an answer key."""
    choices = _maybe_json(choices)
    key = _text(key).strip()
    keys = [str(k).strip() for k in choices["label"]]
    if not key:
        return list(choices["text"]), -1
    if key in keys:
        return list(choices["text"]), keys.index(key)
    if key.isdigit():  # a few ARC items use "1".."4" for the key but letters for the labels
        return list(choices["text"]), int(key) - 1
    if key in "ABCDE":
        return list(choices["text"]), "ABCDE".index(key)
    raise LmpruneError(f"answer key {key!r} matches none of the choice labels {keys}")


def arc(row: Row) -> Row:
    """AI2 ARC (easy or challenge): science exam question."""
    texts, label = _choice_index(row["choices"], row["answerKey"])
    return {"query": f"Question: {_text(row['question'])}\nAnswer:", "choices": texts, "label": label}


def openbookqa(row: Row) -> Row:
    """OpenBookQA (main config): the question stem alone is the query, as in lm-eval."""
    texts, label = _choice_index(row["choices"], row["answerKey"])
    return {"query": _text(row["question_stem"]), "choices": texts, "label": label}
