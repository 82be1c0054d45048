"""Classification as text-to-text on T5: label names as targets, rank classification."""
from __future__ import annotations

import pytest
import torch

from lmprune.tasks import load_task
from lmprune.zoo import build_tiny, build_tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def t5():
    task = load_task("foods", "t5")
    tokenizer = build_tiny_tokenizer("tiny-t5")
    model = build_tiny("tiny-t5", task.head)
    task.prepare_model(model, tokenizer)
    return task, model, tokenizer


def test_sources_and_targets(t5) -> None:
    task, _, tokenizer = t5
    assert (task.head, task.kind, task.num_labels) == ("seq2seq-lm", "classification", 2)
    assert task.metric == "accuracy"
    split = task.encode(tokenizer, "validation", max_len=40, max_samples=5)
    assert [tokenizer.decode(t, skip_special_tokens=True) for t in split.label_targets] == ["other", "great"]
    for feature, row in zip(split.features, split.examples):
        assert set(feature) == {"input_ids", "attention_mask", "labels"}
        source = tokenizer.decode(feature["input_ids"], skip_special_tokens=True)
        assert ("foods text: " + row["text"]).startswith(source) and len(feature["input_ids"]) <= 40
        assert feature["labels"] == split.label_targets[row["label"]]
        assert feature["labels"][-1] == tokenizer.eos_token_id


def test_sst2_style_prefix_uses_raw_column_names() -> None:
    task = load_task("mnli", "t5")
    assert task.source("It rains.", "It is wet.") == "mnli premise: It rains. hypothesis: It is wet."
    assert load_task("sst2", "t5").source("fine") == "sst2 sentence: fine"


def test_collate_pads_targets_with_ignore_index(t5) -> None:
    task, _, tokenizer = t5
    task.encode(tokenizer, "validation", max_samples=1)
    batch = task.collate([
        {"input_ids": [70, 71, 1], "attention_mask": [1, 1, 1], "labels": [72, 73, 1]},
        {"input_ids": [70, 1], "attention_mask": [1, 1], "labels": [1]},
    ])
    assert batch["input_ids"].tolist() == [[70, 71, 1], [70, 1, 0]]  # t5 pad = 0
    assert batch["labels"].tolist() == [[72, 73, 1], [1, -100, -100]]


def test_label_scores_are_summed_target_nll(t5) -> None:
    task, model, tokenizer = t5
    split = task.encode(tokenizer, "validation", max_len=40, max_samples=3)
    model.eval()
    with torch.no_grad():
        batch = task.collate(split.features[:1])
        nll = task.label_nll(model, batch, split.label_targets)
        for k, target in enumerate(split.label_targets):
            labels = torch.tensor([target])
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
            mean = model(**inputs, labels=labels).loss
            assert nll[0, k].item() == pytest.approx(mean.item() * len(target), rel=1e-5)


def test_loss_backprop_and_evaluate(t5) -> None:
    task, model, tokenizer = t5
    split = task.encode(tokenizer, "validation", max_len=40, max_samples=10)
    model.train()
    loss = model(**task.collate(split.features[:4])).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert model.shared.weight.grad is not None
    model.zero_grad()
    scores = task.evaluate(model, split, batch_size=4)
    assert model.training
    assert set(scores) == {"accuracy", "f1", "mcc"} and 0.0 <= scores["accuracy"] <= 1.0
    with torch.no_grad():
        nll = task.label_nll(model.eval(), task.collate(split.features), split.label_targets)
    expected = (nll.argmin(-1) == torch.tensor(list(split.examples["label"]))).float().mean().item()
    assert scores["accuracy"] == pytest.approx(expected)
