"""What every task gives the fine-tuning loop: ``Task`` (encode, collate, evaluate) and
``EncodedSplit`` (the features of one split with what evaluation needs to score them).

The training loop is written once against this interface::

    task = load_task("sst2", model.config.model_type)
    task.prepare_model(model, tokenizer)
    train = task.encode(tokenizer, "train")
    loader = DataLoader(train.features, batch_size=32, shuffle=True, collate_fn=task.collate)
    loss = model(**next(iter(loader))).loss          # the task loss: targets are in the batch
    scores = task.evaluate(model, task.encode(tokenizer, "validation"))
    scores[task.metric]                               # higher is better
"""
from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import datasets
import torch

from lmprune.data import dataset_info, load_dataset
from lmprune.errors import LmpruneError
from lmprune.tasks.batching import input_pad_values, pad_batch

#: model_max_length values at or above this mean "no limit" (transformers' sentinel is 1e30).
_NO_LIMIT = 10**9


@dataclass
class EncodedSplit:
    """One split of a task, tokenized.

    ``features`` are the model inputs (one dict per model input, lists of ints / ints),
    ready for :meth:`Task.collate`; ``examples`` the raw rows they came from. For QA a long
    context yields several features: ``example_index[i]`` is the row of feature ``i`` and
    ``offsets[i][t]`` the ``(start, end)`` characters of token ``t`` in that row's context
    (``None`` for question and special tokens), ``cls_index[i]`` its CLS position (the
    "no answer" target). For text-to-text classification ``label_targets[k]`` holds the
    target token ids of label ``k``. ``tokenizer`` is kept where evaluation decodes
    generated text (summarization).
    """

    features: list[dict]
    examples: datasets.Dataset
    example_index: list[int] | None = None
    offsets: list[list[tuple[int, int] | None]] | None = None
    cls_index: list[int] | None = None
    label_targets: list[list[int]] | None = None
    tokenizer: Any = None

    def __len__(self) -> int:
        return len(self.features)


class Task(abc.ABC):
    """A dataset seen as a training task for one model family (one subclass per kind).

    ``metric`` names the primary dev metric in :meth:`evaluate`'s result (higher is better);
    every metric is a fraction (accuracy, F1, exact match, ROUGE in [0, 1]; correlations in
    [-1, 1]), never a percentage.
    """

    kind: str = ""
    metric: str = ""
    num_labels: int = 0

    def __init__(self, name: str, family: str, head: str, data_files: Any = None):
        self.name, self.family, self.head, self.data_files = name, family, head, data_files
        self.info = dataset_info(name)
        self.pad_token_id: int | None = None  # set by encode(); collate pads with it

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, family={self.family!r}, head={self.head!r})"

    def load_split(self, split: str, max_samples: int | None = None, seed: int = 0) -> datasets.Dataset:
        """The normalized rows of ``split`` (local ``data_files`` when the task has them)."""
        return load_dataset(self.name, split, data_files=self.data_files, max_samples=max_samples, seed=seed)

    def prepare_model(self, model: torch.nn.Module, tokenizer: Any) -> None:
        """Make ``model``/``tokenizer`` fit the task (default: nothing to do)."""

    @abc.abstractmethod
    def encode(self, tokenizer: Any, split: str, max_len: int = 128,
               max_samples: int | None = None, seed: int = 0) -> EncodedSplit:
        """Tokenize ``split`` (inputs truncated to ``max_len`` tokens) into features."""

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        """A right-padded CPU batch whose targets make ``model(**batch).loss`` the task loss."""
        return pad_batch(features, self._pad_values())

    @abc.abstractmethod
    def evaluate(self, model: torch.nn.Module, split: EncodedSplit, batch_size: int = 64,
                 device: Any = None) -> dict[str, float]:
        """Score ``model`` on ``split`` (no grad, eval mode, training mode restored after)."""

    # --- helpers for subclasses ---------------------------------------------------------

    def _remember_pad(self, tokenizer: Any) -> None:
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None:
            raise LmpruneError(
                f"the tokenizer has no pad token, which batching {self.name!r} needs; call "
                "task.prepare_model(model, tokenizer) first (it sets pad = eos for decoders)"
            )
        self.pad_token_id = int(pad)

    def _pad_values(self) -> Mapping[str, int]:
        if self.pad_token_id is None:
            raise LmpruneError("collate() needs the pad token id: call task.encode(tokenizer, ...) first")
        return input_pad_values(self.pad_token_id)

    def _labelled(self, rows: datasets.Dataset, split: str) -> datasets.Dataset:
        """``rows`` unchanged, or an error if any row is unlabeled (label -1: hub test splits)."""
        if "label" in rows.column_names and -1 in column(rows, "label"):
            raise LmpruneError(
                f"split {split!r} of {self.name!r} has unlabeled rows (label -1; GLUE hides its "
                "test labels), so it can be neither trained on nor scored; use 'validation'"
            )
        return rows


def input_limit(tokenizer: Any, max_len: int) -> int:
    """``max_len`` capped at the tokenizer's ``model_max_length`` (the model's positions)."""
    if max_len < 8:
        raise LmpruneError(f"max_len must be at least 8 tokens, got {max_len}")
    limit = getattr(tokenizer, "model_max_length", None) or _NO_LIMIT
    return min(max_len, limit) if limit < _NO_LIMIT else max_len


def column(rows: datasets.Dataset, name: str) -> list:
    """Column ``name`` of ``rows`` as a plain list (``datasets`` 4+ returns a lazy Column)."""
    return list(rows[name])


def features_from(encoded: Mapping[str, list], keys: tuple[str, ...]) -> list[dict]:
    """Row-wise dicts of the ``keys`` present in a batched tokenizer output."""
    present = [k for k in keys if k in encoded]
    return [dict(zip(present, values)) for values in zip(*(encoded[k] for k in present))]
