"""Classification as text-to-text on encoder-decoder models (T5; Raffel et al., 2020, §2.4).

The input is the task name and its fields, ``"sst2 sentence: <text>"`` or
``"mnli premise: <p> hypothesis: <h>"`` (the dataset's raw column names), and the target is
the label's name (``"positive"``). Training is the seq2seq loss on the target tokens.
Evaluation scores every label name as the target and predicts the one with the lowest
summed negative log-likelihood: a rank classification that cannot produce an invalid label
and needs no generation.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lmprune.data.hub_tables import HUB_DATASETS
from lmprune.errors import LmpruneError
from lmprune.tasks.base import EncodedSplit, Task, column, input_limit
from lmprune.tasks.batching import chunks, evaluating, model_device, to_device
from lmprune.tasks.classification import PRIMARY_METRIC, classification_scores


def field_names(name: str) -> tuple[str, str]:
    """The words that introduce the two inputs: the hub's raw column names if any."""
    spec = HUB_DATASETS.get(name)
    if spec is None:
        return "text", "text_pair"
    return spec.columns["text"], spec.columns.get("text_pair", "text_pair")


class TextToTextClassificationTask(Task):
    """Label names as targets of a seq2seq model; rank classification at evaluation."""

    kind = "classification"

    def __init__(self, name: str, family: str, head: str, data_files: Any = None):
        super().__init__(name, family, head, data_files)
        if self.info.kind != "classification":
            raise LmpruneError(
                f"{name!r} is a {self.info.kind} dataset; text-to-text training on {family!r} "
                "supports classification only: use an encoder (bert, roberta) or a decoder"
            )
        self.label_names = tuple(self.info.labels)
        self.num_labels = len(self.label_names)
        self.metric = PRIMARY_METRIC.get(name, "accuracy")
        self.fields = field_names(name)

    def source(self, text: str, text_pair: str | None = None) -> str:
        """The model input for one row, e.g. ``"sst2 sentence: a fine film"``."""
        source = f"{self.name} {self.fields[0]}: {text}"
        return source if text_pair is None else f"{source} {self.fields[1]}: {text_pair}"

    def encode(self, tokenizer: Any, split: str, max_len: int = 128,
               max_samples: int | None = None, seed: int = 0) -> EncodedSplit:
        """Features ``input_ids``, ``attention_mask`` and ``labels`` (the gold name's tokens)."""
        rows = self._labelled(self.load_split(split, max_samples, seed), split)
        self._remember_pad(tokenizer)
        pairs = column(rows, "text_pair") if "text_pair" in rows.column_names else [None] * len(rows)
        sources = [self.source(t, p) for t, p in zip(column(rows, "text"), pairs)]
        encoded = tokenizer(sources, truncation=True, max_length=input_limit(tokenizer, max_len))
        targets = [list(tokenizer(text_target=n)["input_ids"]) for n in self.label_names]
        features = [
            {"input_ids": ids, "attention_mask": mask, "labels": list(targets[label])}
            for ids, mask, label in zip(encoded["input_ids"], encoded["attention_mask"],
                                        column(rows, "label"))
        ]
        return EncodedSplit(features, rows, label_targets=targets)

    def label_nll(self, model: torch.nn.Module, batch: dict[str, torch.Tensor],
                  targets: list[list[int]]) -> torch.Tensor:
        """``(batch, num_labels)`` summed target-token NLL of every label name (encoder run once)."""
        mask = batch["attention_mask"]
        encoder_outputs = model.get_encoder()(input_ids=batch["input_ids"], attention_mask=mask)
        size, device = batch["input_ids"].shape[0], batch["input_ids"].device
        scores = []
        for target in targets:
            labels = torch.tensor([target] * size, device=device)
            logits = model(encoder_outputs=encoder_outputs, attention_mask=mask, labels=labels).logits.float()
            scores.append(F.cross_entropy(logits.transpose(1, 2), labels, reduction="none").sum(-1))
        return torch.stack(scores, dim=1)

    def predict(self, model: torch.nn.Module, split: EncodedSplit, batch_size: int = 64,
                device: Any = None) -> list[int]:
        """The label id whose name the model finds most likely, one per example."""
        if split.label_targets is None:
            raise LmpruneError("this split was not encoded by a text-to-text task (no label_targets)")
        device = model_device(model, device)
        predictions: list[int] = []
        with evaluating(model):
            for features in chunks(split.features, batch_size):
                batch = to_device(self.collate(features), device)
                predictions += self.label_nll(model, batch, split.label_targets).argmin(-1).tolist()
        return predictions

    def evaluate(self, model: torch.nn.Module, split: EncodedSplit, batch_size: int = 64,
                 device: Any = None) -> dict[str, float]:
        """Accuracy of rank classification (+ F1 and MCC when binary)."""
        predictions = self.predict(model, split, batch_size, device)
        return classification_scores(predictions, column(split.examples, "label"), self.num_labels)
