"""Extractive QA: windowed features, answer positions, post-processing, SQuAD v2 scores."""
from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import torch
from task_rows import QUESTIONS

from lmprune.errors import LmpruneError
from lmprune.tasks import load_task
from lmprune.tasks.qa_features import check_fast, window_sizes
from lmprune.tasks.qa_postprocess import SpanSearch, best_span
from lmprune.zoo import build_tiny, build_tiny_tokenizer, resolve_model_dir

pytestmark = pytest.mark.usefixtures("one_thread")


def _task(squad_file: Path, family: str = "bert", stride: int = 16):
    task = load_task("squad_v2", family, data_files={"validation": str(squad_file)})
    task.doc_stride = stride
    return task


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_dir("minilm-l6"))


def _check_round_trip(task, tokenizer, max_len: int) -> None:
    split = task.encode(tokenizer, "validation", max_len=max_len)
    # long contexts split into windows overlapping by more than any answer, so each fits one
    assert len(split) > len(split.examples) == len(QUESTIONS)
    assert sorted(set(split.example_index)) == list(range(len(QUESTIONS)))
    found = set()
    for i, feature in enumerate(split.features):
        start, end, cls = feature["start_positions"], feature["end_positions"], split.cls_index[i]
        assert len(feature["input_ids"]) <= max_len and feature["input_ids"][cls] == tokenizer.cls_token_id
        question, context, answer = QUESTIONS[split.example_index[i]]
        assert split.examples[split.example_index[i]]["context"] == context
        if start == cls:
            assert end == cls
            continue
        offsets = split.offsets[i]
        assert context[offsets[start][0] : offsets[end][1]] == answer
        found.add(split.example_index[i])
    assert found == {i for i, q in enumerate(QUESTIONS) if q[2] is not None}


@pytest.mark.parametrize("alias", ["tiny-bert", "tiny-roberta"])
def test_positions_round_trip_char_tokenizer(squad_file: Path, alias: str) -> None:
    _check_round_trip(_task(squad_file, "roberta"), build_tiny_tokenizer(alias), max_len=64)


def test_positions_round_trip_real_tokenizer(squad_file: Path, minilm_tokenizer) -> None:
    _check_round_trip(_task(squad_file, stride=8), minilm_tokenizer, max_len=32)


def _oracle_logits(split, hit: float = 10.0):
    """Logits peaking at each feature's target positions (CLS for no answer)."""
    starts, ends = [], []
    for feature in split.features:
        start = [0.0] * len(feature["input_ids"])
        end = list(start)
        start[feature["start_positions"]] = hit
        end[feature["end_positions"]] = hit
        starts.append(start)
        ends.append(end)
    return starts, ends


def test_oracle_logits_score_perfectly(squad_file: Path) -> None:
    task = _task(squad_file)
    split = task.encode(build_tiny_tokenizer("tiny-bert"), "validation", max_len=64)
    answers = task.predict(split, *_oracle_logits(split))
    assert answers == [a or "" for _, _, a in QUESTIONS]
    from lmprune.tasks.metrics import squad_v2_scores

    scores = squad_v2_scores(answers, [a["text"] for a in split.examples["answers"]])
    assert scores["f1"] == scores["exact"] == 1.0


def test_null_wins_when_cls_scores_highest(squad_file: Path) -> None:
    task = _task(squad_file)
    split = task.encode(build_tiny_tokenizer("tiny-bert"), "validation", max_len=64)
    starts, ends = _oracle_logits(split, hit=1.0)
    for i, cls in enumerate(split.cls_index):
        starts[i][cls] = ends[i][cls] = 5.0  # null score 10 > best span 2 everywhere
    assert task.predict(split, starts, ends) == [""] * len(QUESTIONS)
    task.search = SpanSearch(null_threshold=9.0)  # spans win unless null beats them by > 9
    assert task.predict(split, starts, ends) == [a or "" for _, _, a in QUESTIONS]


def test_best_span_respects_order_and_length() -> None:
    offsets = [None, (0, 1), (2, 5), (6, 9), None]
    start, end = [0, 1, 9, 0, 0], [0, 8, 0, 2, 0]  # best start after best end
    assert best_span(start, end, offsets, SpanSearch()) == (11.0, (2, 9))
    assert best_span(start, end, offsets, SpanSearch(max_answer_length=1)) == (9.0, (2, 5))
    assert best_span(start, end, [None] * 5, SpanSearch()) == (float("-inf"), None)


def test_long_question_is_capped(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    question = "Which " + "very " * 40 + "long river?"
    row = {"id": "x", "question": question, "context": "The Nile is long.",
           "answers": {"text": ["The Nile"], "answer_start": [0]}}
    path.write_text(json.dumps(row) + "\n")
    task = load_task("squad_v2", "bert", data_files={"validation": str(path)})
    split = task.encode(build_tiny_tokenizer("tiny-bert"), "validation", max_len=64)
    feature = split.features[0]
    assert feature["token_type_ids"].count(0) == 32 + 2  # capped question, [CLS], [SEP]
    # "The Nile" right after [CLS] + 32 question tokens + [SEP]
    assert (feature["start_positions"], feature["end_positions"]) == (34, 41)


def test_window_sizes_and_slow_tokenizer_error() -> None:
    tokenizer = build_tiny_tokenizer("tiny-bert")  # 3 special tokens in a pair
    assert window_sizes(tokenizer, 384, 64, 128) == (64, 128)
    assert window_sizes(tokenizer, 64, 64, 128) == (32, 14)  # stride capped at (64-32-3)//2
    with pytest.raises(LmpruneError, match="fast tokenizer"):
        check_fast(types.SimpleNamespace(is_fast=False))


def test_loss_backprop_and_evaluate(squad_file: Path) -> None:
    task = _task(squad_file)
    assert (task.head, task.metric, task.num_labels) == ("question-answering", "f1", 0)
    tokenizer = build_tiny_tokenizer("tiny-bert")
    model = build_tiny("tiny-bert", task.head)
    split = task.encode(tokenizer, "validation", max_len=64)
    model.train()
    batch = task.collate(split.features[:6])
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions"}
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert model.qa_outputs.weight.grad.abs().sum() > 0
    scores = task.evaluate(model, split, batch_size=4)
    assert model.training
    assert {"f1", "exact"} <= set(scores)
    assert all(0.0 <= v <= 1.0 for v in scores.values())
