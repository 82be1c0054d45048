"""Synthetic batches and seeded tiny models for training-method tests (no tokenizer, no
dataset)."""
from __future__ import annotations

import torch

from lmprune.zoo import build_tiny

SEQ = 10
#: the head each tiny model trains with here
HEADS = {"tiny-bert": "sequence-classification", "tiny-llama": "sequence-classification",
         "tiny-t5": "seq2seq-lm", "tiny-mpnet": "sequence-classification"}


def float64_model(name: str, dropout: bool = False):
    """A seeded tiny model in float64, without dropout unless asked: two runs of it compute
    the same up to the order of float sums."""
    torch.manual_seed(0)
    model = build_tiny(name, HEADS[name]).double()
    if not dropout:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
            elif isinstance(getattr(module, "dropout", None), float):  # T5 attention
                module.dropout = 0.0
    if name == "tiny-llama":
        model.config.pad_token_id = 0
    return model


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
