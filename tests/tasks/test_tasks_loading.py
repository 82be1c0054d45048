"""load_task: heads and metrics per (dataset, family), and the errors users can hit."""
from __future__ import annotations

import pytest

from lmprune.errors import LmpruneError, UnknownNameError
from lmprune.tasks import TASK_KINDS, load_task, trainable_datasets

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("name", "family", "head", "metric", "num_labels"), [
    ("foods", "bert", "sequence-classification", "accuracy", 2),
    ("foods", "t5", "seq2seq-lm", "accuracy", 2),
    ("mnli", "qwen2", "sequence-classification", "accuracy", 3),
    ("cola", "roberta", "sequence-classification", "mcc", 2),
    ("stsb", "llama", "sequence-classification", "pearson", 1),
    ("squad_v2", "roberta", "question-answering", "f1", 0),
    ("cnn_dailymail", "t5", "seq2seq-lm", "rougeL", 0),
])
def test_heads_and_metrics(name: str, family: str, head: str, metric: str, num_labels: int) -> None:
    task = load_task(name, family)
    assert (task.name, task.head, task.metric, task.num_labels) == (name, head, metric, num_labels)
    assert task.kind in TASK_KINDS


def test_trainable_datasets_are_the_task_kinds() -> None:
    names = trainable_datasets()
    assert {"foods", "sst2", "stsb", "squad_v2", "cnn_dailymail"} <= set(names)
    assert not {"austen", "alpaca", "piqa", "wikitext2"} & set(names)
    assert TASK_KINDS == ("classification", "regression", "qa", "summarization")


def test_unknown_dataset_did_you_mean() -> None:
    with pytest.raises(UnknownNameError) as info:
        load_task("food", "bert")
    msg = str(info.value)
    assert "Did you mean 'foods'" in msg and "squad_v2" in msg and "austen" not in msg


@pytest.mark.parametrize(("name", "kind"), [
    ("austen", "text"), ("alpaca", "instruction"), ("piqa", "multiple-choice"),
])
def test_untrainable_kind(name: str, kind: str) -> None:
    kinds = "classification, regression, qa, summarization"
    with pytest.raises(LmpruneError, match=f"is a {kind} dataset.*{kinds}"):
        load_task(name, "bert")


@pytest.mark.parametrize(("name", "family", "needs"), [
    ("squad_v2", "t5", "encoder span head"),
    ("squad_v2", "llama", "encoder span head"),
    ("cnn_dailymail", "bert", "encoder-decoder"),
    ("cnn_dailymail", "qwen2", "encoder-decoder"),
    ("stsb", "t5", "classification only"),
])
def test_head_family_mismatch(name: str, family: str, needs: str) -> None:
    with pytest.raises(LmpruneError, match=f"cannot train {name!r}.*{family!r}.*{needs}"):
        load_task(name, family)


def test_data_files_on_bundled_dataset() -> None:
    with pytest.raises(LmpruneError, match="bundled"):
        load_task("foods", "bert", data_files={"train": "x.csv"})
