"""Summarization on tiny-t5 from a local CNN/DailyMail-style jsonl file."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmprune.tasks import load_task
from lmprune.tasks.summarization import PREFIX
from lmprune.zoo import build_tiny, build_tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(cnn_file: Path):
    task = load_task("cnn_dailymail", "t5", data_files={"validation": str(cnn_file)})
    task.target_len = 12
    tokenizer = build_tiny_tokenizer("tiny-t5")
    model = build_tiny("tiny-t5", task.head)
    task.prepare_model(model, tokenizer)
    return task, model, tokenizer, task.encode(tokenizer, "validation", max_len=48)


def test_encode_sources_and_targets(setup) -> None:
    task, _, tokenizer, split = setup
    assert (task.kind, task.head, task.metric) == ("summarization", "seq2seq-lm", "rougeL")
    assert len(split) == len(split.examples) == 3
    for feature, row in zip(split.features, split.examples):
        source = tokenizer.decode(feature["input_ids"], skip_special_tokens=True)
        assert (PREFIX + row["document"]).startswith(source) and len(feature["input_ids"]) <= 48
        target = tokenizer.decode(feature["labels"], skip_special_tokens=True)
        assert len(feature["labels"]) <= 12 and row["summary"].startswith(target)
    assert split.features[2]["labels"][-1] == tokenizer.eos_token_id  # "New bridge opens." is cut
    assert tokenizer.decode(split.features[2]["labels"][:-1]) == "New bridge "


def test_collate_and_loss_over_target_tokens(setup) -> None:
    task, model, _, split = setup
    batch = task.collate(split.features)
    lengths = [len(f["labels"]) for f in split.features]
    assert batch["labels"].shape == (3, max(lengths))
    assert [(row == -100).sum().item() for row in batch["labels"]] == [max(lengths) - n for n in lengths]
    model.train()
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert model.lm_head.weight.grad is not None or model.shared.weight.grad is not None
    model.zero_grad()


def test_generate_and_evaluate(setup) -> None:
    task, model, _, split = setup
    model.train()
    summaries = task.generate(model, split, batch_size=2)
    assert len(summaries) == 3 and all(isinstance(s, str) for s in summaries)
    scores = task.evaluate(model, split, batch_size=2)
    assert model.training
    assert set(scores) == {"rouge1", "rouge2", "rougeL"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
