"""Abstractive summarization on encoder-decoder models (T5's ``"summarize: "`` prefix).

Training is the seq2seq loss of the reference summary (truncated to ``target_len`` tokens)
given the prefixed document (truncated to ``max_len``). Evaluation generates greedily, at
most ``target_len`` new tokens, and reports the mean ROUGE-1/2/L F-measure against the
references (:func:`.metrics.rouge_scores`), as fractions.
"""
from __future__ import annotations

from typing import Any

import torch

from lmprune.errors import LmpruneError
from lmprune.tasks import metrics
from lmprune.tasks.base import EncodedSplit, Task, column, input_limit
from lmprune.tasks.batching import chunks, evaluating, model_device, to_device

PREFIX = "summarize: "


class SummarizationTask(Task):
    """Document -> summary; ``target_len`` (default 64 tokens) bounds targets and generation."""

    kind = "summarization"
    metric = "rougeL"

    def __init__(self, name: str, family: str, head: str, data_files: Any = None):
        super().__init__(name, family, head, data_files)
        self.target_len = 64

    def encode(self, tokenizer: Any, split: str, max_len: int = 128,
               max_samples: int | None = None, seed: int = 0) -> EncodedSplit:
        """Features ``input_ids``, ``attention_mask``, ``labels`` (summary tokens, ending in eos)."""
        rows = self.load_split(split, max_samples, seed)
        self._remember_pad(tokenizer)
        sources = [PREFIX + document for document in column(rows, "document")]
        encoded = tokenizer(sources, truncation=True, max_length=input_limit(tokenizer, max_len))
        targets = tokenizer(text_target=column(rows, "summary"), truncation=True, max_length=self.target_len)
        features = [
            {"input_ids": ids, "attention_mask": mask, "labels": labels}
            for ids, mask, labels in zip(encoded["input_ids"], encoded["attention_mask"],
                                         targets["input_ids"])
        ]
        return EncodedSplit(features, rows, tokenizer=tokenizer)

    def generate(self, model: torch.nn.Module, split: EncodedSplit, batch_size: int = 64,
                 device: Any = None) -> list[str]:
        """Greedy summaries, one per example, decoded without special tokens."""
        if split.tokenizer is None:
            raise LmpruneError("this split carries no tokenizer to decode summaries; "
                               "encode it with task.encode()")
        device = model_device(model, device)
        summaries: list[str] = []
        with evaluating(model):
            for features in chunks(split.features, batch_size):
                batch = to_device(self.collate(features), device)
                ids = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                     do_sample=False, num_beams=1, max_new_tokens=self.target_len)
                summaries += split.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return summaries

    def evaluate(self, model: torch.nn.Module, split: EncodedSplit, batch_size: int = 64,
                 device: Any = None) -> dict[str, float]:
        """Mean ROUGE-1, ROUGE-2 and ROUGE-L F-measure, fractions in [0, 1]."""
        summaries = self.generate(model, split, batch_size, device)
        return metrics.rouge_scores(summaries, column(split.examples, "summary"))
