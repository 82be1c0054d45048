"""Synthetic batches for training-method tests (no tokenizer, no dataset)."""
from __future__ import annotations

import torch

SEQ = 10


def features(vocab: int, n: int = 48, seed: int = 0, seq2seq: bool = False) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ids = torch.randint(5, vocab, (SEQ,), generator=g).tolist()
        label = [int(ids[0] % 3) + 5, 1] if seq2seq else i % 2
        out.append({"input_ids": ids, "label": label})
    return out


def collate(fs: list[dict]) -> dict:
    batch = {"input_ids": torch.tensor([f["input_ids"] for f in fs]),
             "attention_mask": torch.ones(len(fs), SEQ, dtype=torch.long)}
    batch["labels"] = torch.tensor([f["label"] for f in fs])
    return batch
