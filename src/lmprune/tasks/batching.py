"""Batching helpers shared by the tasks: dynamic right-padding and evaluation plumbing.

Features are plain dicts of ints and lists of ints (picklable, ``DataLoader``-friendly); a
batch pads every list to the longest in the batch, on the right. Right padding is correct
for every head here: encoders and seq2seq models mask padding, and decoder sequence
classification pools the rightmost non-pad token.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

#: label value the transformers losses ignore (padded target tokens).
IGNORE_INDEX = -100


def pad_batch(features: Sequence[Mapping[str, Any]],
              pad_values: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """Stack ``features`` into tensors, right-padding list-valued keys with ``pad_values[key]``.

    Scalar keys become a 1-d tensor: float32 when any value is a float (regression
    targets), int64 otherwise. All features must have the same keys.
    """
    if not features:
        raise ValueError("cannot collate an empty list of features")
    keys = list(features[0])
    batch: dict[str, torch.Tensor] = {}
    for key in keys:
        values = [f[key] for f in features]
        if isinstance(values[0], (list, tuple)):
            if key not in pad_values:
                raise ValueError(f"no padding value for list-valued feature {key!r}")
            width = max(len(v) for v in values)
            pad = pad_values[key]
            batch[key] = torch.tensor([list(v) + [pad] * (width - len(v)) for v in values], dtype=torch.long)
        elif any(isinstance(v, float) for v in values):
            batch[key] = torch.tensor(values, dtype=torch.float32)
        else:
            batch[key] = torch.tensor(values, dtype=torch.long)
    return batch


def input_pad_values(pad_token_id: int) -> dict[str, int]:
    """Padding values for model inputs and token targets."""
    return {"input_ids": pad_token_id, "attention_mask": 0, "token_type_ids": 0, "labels": IGNORE_INDEX}


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most ``size`` items."""
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def model_device(model: torch.nn.Module, device: Any = None) -> torch.device:
    """``device`` if given, else the device of the model's first parameter."""
    if device is not None:
        return torch.device(device)
    return next(model.parameters()).device


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode and no grad inside; the model's previous training mode restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)
