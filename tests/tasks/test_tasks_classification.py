"""Classification and regression through classification heads (tiny-bert, tiny-llama)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmprune.data import load_dataset
from lmprune.errors import LmpruneError
from lmprune.tasks import load_task
from lmprune.zoo import build_tiny, build_tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(alias: str, family: str, name: str = "foods", **kw):
    task = load_task(name, family, **kw)
    tokenizer = build_tiny_tokenizer(alias)
    model = build_tiny(alias, task.head, num_labels=task.num_labels)
    task.prepare_model(model, tokenizer)
    return task, model, tokenizer


def test_encode_features_match_rows() -> None:
    task, _, tokenizer = _setup("tiny-bert", "bert")
    split = task.encode(tokenizer, "validation", max_len=32, max_samples=6)
    rows = load_dataset("foods", "validation", max_samples=6)
    assert len(split) == 6 and len(split.examples) == 6
    for feature, row in zip(split.features, rows):
        assert set(feature) == {"input_ids", "attention_mask", "token_type_ids", "label"}
        assert feature["label"] == row["label"] and len(feature["input_ids"]) <= 32
        body = tokenizer.decode(feature["input_ids"], skip_special_tokens=True)
        assert row["text"].startswith(body) and len(body) == min(len(row["text"]), 30)


def test_max_len_capped_at_model_positions() -> None:
    task, _, tokenizer = _setup("tiny-bert", "bert")  # 64 learned positions
    split = task.encode(tokenizer, "validation", max_len=512, max_samples=4)
    assert max(len(f["input_ids"]) for f in split.features) == 64


def test_collate_pads_right_and_renames_label() -> None:
    task, _, tokenizer = _setup("tiny-bert", "bert")
    task.encode(tokenizer, "validation", max_len=16, max_samples=1)
    short = {"input_ids": [2, 70, 3], "attention_mask": [1, 1, 1], "token_type_ids": [0, 0, 0], "label": 1}
    long = {"input_ids": [2, 70, 71, 72, 3], "attention_mask": [1] * 5, "token_type_ids": [0] * 5, "label": 0}
    batch = task.collate([short, long])
    assert batch["input_ids"].tolist() == [[2, 70, 3, 0, 0], [2, 70, 71, 72, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1] * 5]
    assert batch["labels"].tolist() == [1, 0] and "label" not in batch


@pytest.mark.parametrize(("alias", "family"), [("tiny-bert", "bert"), ("tiny-llama", "llama")])
def test_padding_does_not_change_logits(alias: str, family: str) -> None:
    task, model, tokenizer = _setup(alias, family)
    short = task.encode(tokenizer, "validation", max_len=12, max_samples=1).features[0]
    long = task.encode(tokenizer, "validation", max_len=40, max_samples=1).features[0]
    assert (len(short["input_ids"]), len(long["input_ids"])) == (12, 40)
    with torch.no_grad():
        alone = model(**task.collate([short])).logits
        padded = model(**task.collate([short, long])).logits[:1]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("alias", "family"), [("tiny-bert", "bert"), ("tiny-roberta", "roberta"),
                                               ("tiny-llama", "llama")])
def test_loss_backprop_and_evaluate(alias: str, family: str) -> None:
    task, model, tokenizer = _setup(alias, family)
    split = task.encode(tokenizer, "validation", max_len=48, max_samples=12)
    model.train()
    loss = model(**task.collate(split.features[:4])).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    scores = task.evaluate(model, split, batch_size=5)
    assert model.training  # restored
    assert set(scores) == {"accuracy", "f1", "mcc"} and task.metric == "accuracy"
    assert 0.0 <= scores["accuracy"] <= 1.0 and 0.0 <= scores["f1"] <= 1.0
    predictions = task.predict(model, split)
    assert scores["accuracy"] == pytest.approx(
        sum(p == f["label"] for p, f in zip(predictions, split.features)) / len(split))


def test_decoder_without_pad_token_gets_eos() -> None:
    task = load_task("foods", "llama")
    tokenizer = build_tiny_tokenizer("tiny-llama")
    model = build_tiny("tiny-llama", task.head)
    tokenizer.pad_token = None
    model.config.pad_token_id = None
    with pytest.raises(LmpruneError, match="prepare_model"):
        task.encode(tokenizer, "validation", max_samples=2)
    task.prepare_model(model, tokenizer)
    assert tokenizer.pad_token == tokenizer.eos_token
    assert model.config.pad_token_id == tokenizer.eos_token_id
    split = task.encode(tokenizer, "validation", max_len=32, max_samples=4)
    assert task.collate(split.features)["input_ids"].shape[0] == 4
    assert 0.0 <= task.evaluate(model, split)["accuracy"] <= 1.0


def test_head_size_mismatch_is_an_error() -> None:
    task = load_task("foods", "bert")
    with pytest.raises(LmpruneError, match="num_labels=2"):
        model = build_tiny("tiny-bert", task.head, num_labels=3)
        task.prepare_model(model, build_tiny_tokenizer("tiny-bert"))


def test_collate_before_encode_is_an_error() -> None:
    with pytest.raises(LmpruneError, match="encode"):
        load_task("foods", "bert").collate([{"input_ids": [1], "attention_mask": [1], "label": 0}])


def test_regression_stsb_from_local_csv(tmp_path: Path) -> None:
    path = tmp_path / "stsb.csv"
    path.write_text("sentence1,sentence2,label\na cat,a cat,5.0\na dog,the sky,0.4\nhot tea,warm tea,3.8\n"
                    "red car,blue car,2.5\n")
    task, model, tokenizer = _setup("tiny-bert", "bert", "stsb", data_files={"validation": str(path)})
    assert (task.kind, task.num_labels, task.metric) == ("regression", 1, "pearson")
    split = task.encode(tokenizer, "validation", max_len=32)
    assert [f["label"] for f in split.features] == pytest.approx([5.0, 0.4, 3.8, 2.5])
    first = split.features[0]
    assert tokenizer.decode(first["input_ids"]) == "[CLS]a cat[SEP]a cat[SEP]"  # one token a char
    assert first["token_type_ids"] == [0] * 7 + [1] * 6
    batch = task.collate(split.features)
    assert batch["labels"].dtype == torch.float32
    loss = model(**batch).loss
    logits = model(**batch).logits[:, 0]
    assert loss.item() == pytest.approx(torch.mean((logits - batch["labels"]) ** 2).item(), rel=1e-5)  # MSE
    scores = task.evaluate(model, split)
    assert set(scores) == {"pearson", "spearman"} and -1.0 <= scores["pearson"] <= 1.0


def test_unlabeled_split_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "test.csv"
    path.write_text("sentence,label\nfine film,-1\nbad film,-1\n")
    task, _, tokenizer = _setup("tiny-bert", "bert", "sst2", data_files={"test": str(path)})
    with pytest.raises(LmpruneError, match="unlabeled"):
        task.encode(tokenizer, "test")
