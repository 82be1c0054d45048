"""Extractive question answering (SQuAD v2) on encoder span heads (``*ForQuestionAnswering``).

Training targets are ``start_positions``/``end_positions`` (CLS for no answer in the window,
see :mod:`.qa_features`); the span head's loss is their mean cross-entropy. Evaluation
predicts an answer per question (:mod:`.qa_postprocess`) and scores it with the official
SQuAD 2.0 exact match and F1 (:func:`.metrics.squad_v2_scores`), as fractions.
"""
from __future__ import annotations

from typing import Any

import torch

from lmprune.tasks import metrics
from lmprune.tasks.base import EncodedSplit, Task, column, input_limit
from lmprune.tasks.batching import chunks, evaluating, model_device, to_device
from lmprune.tasks.qa_features import build_features
from lmprune.tasks.qa_postprocess import SpanSearch, predict_answers


class QuestionAnsweringTask(Task):
    """SQuAD v2-style QA; ``doc_stride``, ``max_query_len`` and ``search`` are settable."""

    kind = "qa"
    metric = "f1"

    def __init__(self, name: str, family: str, head: str, data_files: Any = None):
        super().__init__(name, family, head, data_files)
        self.doc_stride = 128
        self.max_query_len = 64
        self.search = SpanSearch()

    def encode(self, tokenizer: Any, split: str, max_len: int = 128,
               max_samples: int | None = None, seed: int = 0) -> EncodedSplit:
        """Windowed features with ``start_positions``/``end_positions`` (several per long context)."""
        rows = self.load_split(split, max_samples, seed)
        self._remember_pad(tokenizer)
        built = build_features(tokenizer, rows, input_limit(tokenizer, max_len),
                               self.max_query_len, self.doc_stride)
        return EncodedSplit(built.features, rows, example_index=built.example_index,
                            offsets=built.offsets, cls_index=built.cls_index)

    def logits(self, model: torch.nn.Module, split: EncodedSplit, batch_size: int = 64,
               device: Any = None) -> tuple[list[list[float]], list[list[float]]]:
        """Start and end logits of every feature, each cut to the feature's length."""
        device = model_device(model, device)
        starts: list[list[float]] = []
        ends: list[list[float]] = []
        with evaluating(model):
            for features in chunks(split.features, batch_size):
                batch = to_device(self.collate(features), device)
                for key in ("start_positions", "end_positions"):
                    batch.pop(key)
                out = model(**batch)
                start, end = out.start_logits.float().cpu(), out.end_logits.float().cpu()
                for row, feature in enumerate(features):
                    n = len(feature["input_ids"])
                    starts.append(start[row, :n].tolist())
                    ends.append(end[row, :n].tolist())
        return starts, ends

    def predict(self, split: EncodedSplit, start_logits: list[list[float]],
                end_logits: list[list[float]]) -> list[str]:
        """Answer strings, one per example (``""`` = unanswerable)."""
        return predict_answers(column(split.examples, "context"), split.example_index, split.offsets,
                               split.cls_index, start_logits, end_logits, self.search)

    def evaluate(self, model: torch.nn.Module, split: EncodedSplit, batch_size: int = 64,
                 device: Any = None) -> dict[str, float]:
        """SQuAD v2 ``exact`` and ``f1`` (plus ``has_ans_f1``/``no_ans_f1``), fractions in [0, 1]."""
        answers = self.predict(split, *self.logits(model, split, batch_size, device))
        golds = [a["text"] for a in column(split.examples, "answers")]
        return metrics.squad_v2_scores(answers, golds)
