"""Sequence classification and regression on a classification head (encoders and decoders).

Inputs are ``tokenizer(text, text_pair)``; the head's loss is cross-entropy over
``num_labels`` classes, or mean squared error when ``num_labels == 1`` (GLUE STS-B), which
is how transformers' ``*ForSequenceClassification`` picks its problem type. Metrics follow
GLUE (Wang et al., 2019): accuracy (plus F1 of class 1 and MCC for binary tasks), MCC as the
primary metric of CoLA, Pearson and Spearman correlations for STS-B.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lmprune.errors import LmpruneError
from lmprune.tasks import metrics
from lmprune.tasks.base import EncodedSplit, Task, column, features_from, input_limit
from lmprune.tasks.batching import chunks, evaluating, model_device, to_device

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: datasets whose primary metric is not accuracy (GLUE's choices).
PRIMARY_METRIC = {"cola": "mcc"}


def classification_scores(predictions: Sequence[int], labels: Sequence[int],
                          num_labels: int) -> dict[str, float]:
    """Accuracy; for binary tasks also F1 of class 1 and Matthews correlation."""
    scores = {"accuracy": metrics.accuracy(predictions, labels)}
    if num_labels == 2:
        scores["f1"] = metrics.binary_f1(predictions, labels)
        scores["mcc"] = metrics.matthews_corrcoef(predictions, labels)
    return scores


def regression_scores(predictions: Sequence[float], labels: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman correlation of predicted and gold scores."""
    return {"pearson": metrics.pearson(predictions, labels),
            "spearman": metrics.spearman(predictions, labels)}


def set_pad_token(model: torch.nn.Module, tokenizer: Any) -> None:
    """Give tokenizer and model config a pad token (pad = eos when missing).

    Decoder classification heads pool the rightmost token that is not ``pad_token_id`` and
    refuse batches larger than one without it; LLaMA-style tokenizers ship no pad token.
    """
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise LmpruneError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")
        tokenizer.pad_token = tokenizer.eos_token
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id


class SequenceClassificationTask(Task):
    """Classification (label ids) or regression (float scores) through a classification head."""

    def __init__(self, name: str, family: str, head: str, data_files: Any = None):
        super().__init__(name, family, head, data_files)
        self.kind = self.info.kind
        self.label_names = tuple(self.info.labels)
        if self.kind == "regression":
            self.num_labels, self.metric = 1, "pearson"
        else:
            self.num_labels, self.metric = len(self.label_names), PRIMARY_METRIC.get(name, "accuracy")

    def prepare_model(self, model: torch.nn.Module, tokenizer: Any) -> None:
        """Check the head's label count; set a pad token where the model lacks one."""
        have = getattr(model.config, "num_labels", None)
        if have != self.num_labels:
            raise LmpruneError(
                f"the model's classification head has {have} output(s) but {self.name!r} needs "
                f"{self.num_labels}; load it with num_labels={self.num_labels}"
            )
        set_pad_token(model, tokenizer)

    def encode(self, tokenizer: Any, split: str, max_len: int = 128,
               max_samples: int | None = None, seed: int = 0) -> EncodedSplit:
        """Features ``input_ids``, ``attention_mask`` (``token_type_ids``), ``label``."""
        rows = self._labelled(self.load_split(split, max_samples, seed), split)
        self._remember_pad(tokenizer)
        pairs = column(rows, "text_pair") if "text_pair" in rows.column_names else None
        limit = input_limit(tokenizer, max_len)
        encoded = tokenizer(column(rows, "text"), pairs, truncation=True, max_length=limit)
        features = features_from(encoded, MODEL_INPUTS)
        cast = float if self.kind == "regression" else int
        for feature, label in zip(features, column(rows, "label")):
            feature["label"] = cast(label)
        return EncodedSplit(features, rows)

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = super().collate(features)
        batch["labels"] = batch.pop("label")
        return batch

    def predict(self, model: torch.nn.Module, split: EncodedSplit, batch_size: int = 64,
                device: Any = None) -> list:
        """Predicted label ids (regression: predicted scores), one per feature."""
        device = model_device(model, device)
        predictions: list = []
        with evaluating(model):
            for features in chunks(split.features, batch_size):
                batch = to_device(self.collate(features), device)
                batch.pop("labels")
                logits = model(**batch).logits.float()
                if self.kind == "regression":
                    predictions += logits[:, 0].tolist()
                else:
                    predictions += logits.argmax(-1).tolist()
        return predictions

    def evaluate(self, model: torch.nn.Module, split: EncodedSplit, batch_size: int = 64,
                 device: Any = None) -> dict[str, float]:
        """Accuracy (+ F1, MCC when binary) or, for regression, Pearson and Spearman."""
        predictions = self.predict(model, split, batch_size, device)
        labels = [f["label"] for f in split.features]
        if self.kind == "regression":
            return regression_scores(predictions, labels)
        return classification_scores(predictions, labels, self.num_labels)
