"""Calibration samples: fixed-length token windows drawn from a text corpus.

LLM-Pruner draws N samples (default 10) of L tokens (default 128) from BookCorpus; lmprune
draws them from any text dataset (offline: ``austen``). A sample is a window of exactly L
tokens inside one document (documents are paragraphs for ``austen``; short neighbouring
paragraphs are joined into documents of at least L tokens so that the corpus keeps its
natural text). Documents with fewer than L tokens are never used.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lmprune.errors import LmpruneError


@dataclass
class Calibration:
    """Token windows for importance estimation and for search objectives."""

    samples: torch.Tensor  # [N, L] token ids for importance / gradients
    heldout: torch.Tensor | None  # [M, L] disjoint windows for objectives (perplexity)
    pool: torch.Tensor | None  # [P, L] candidate windows (AdaPruner's calibration subspace)
    dataset: str
    split: str
    seq_len: int
    confirm: torch.Tensor | None = None  # [C, L] fresh windows: AdaPruner's confirmation round

    def describe(self) -> str:
        parts = [f"{len(self.samples)} samples x {self.seq_len} tokens from {self.dataset}/{self.split}"]
        if self.heldout is not None:
            parts.append(f"{len(self.heldout)} held-out")
        if self.pool is not None:
            parts.append(f"pool of {len(self.pool)}")
        if self.confirm is not None:
            parts.append(f"{len(self.confirm)} confirmation")
        return ", ".join(parts)


def _documents(tokenizer, texts: list[str], seq_len: int) -> list[list[int]]:
    """Token lists of at least ``seq_len`` tokens: consecutive texts joined with blank lines."""
    docs, current = [], []
    encoded = tokenizer([text + "\n\n" for text in texts], add_special_tokens=False)["input_ids"]
    for ids in encoded:  # one batched call: per-text calls cost more than the tokenizing
        current.extend(ids)
        if len(current) >= seq_len:
            docs.append(current)
            current = []
    return docs


def token_windows(tokenizer, texts: list[str], count: int, seq_len: int, seed: int = 0,
                  where: str = "the corpus") -> torch.Tensor:
    """``count`` windows of exactly ``seq_len`` tokens, each from a different document when
    possible, chosen at random (seeded)."""
    docs = _documents(tokenizer, texts, seq_len)
    if not docs:
        raise LmpruneError(f"no text in {where} reaches {seq_len} tokens, so no calibration "
                           f"sample can be drawn; use a shorter data.seq_len or another corpus")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(docs), generator=g).tolist()
    windows = []
    for i in range(count):
        doc = docs[order[i % len(order)]]
        start = int(torch.randint(0, len(doc) - seq_len + 1, (1,), generator=g))
        windows.append(doc[start:start + seq_len])
    return torch.tensor(windows, dtype=torch.long)


def build_calibration(tokenizer, dataset: str = "austen", split: str = "train",
                      num_samples: int = 10, seq_len: int = 128, seed: int = 0,
                      heldout: int = 0, pool: int = 0, confirm: int = 0,
                      max_texts: int = 20000) -> Calibration:
    """Draw disjoint sample / held-out / pool / confirmation windows from ``dataset`` (any
    ``text`` dataset). The windows are drawn in that order from one seeded stream, so asking
    for more confirmation windows never changes the others."""
    from lmprune.data import dataset_info, load_dataset

    info = dataset_info(dataset)
    if info.kind != "text":
        raise LmpruneError(f"calibration needs a text dataset; {dataset!r} is {info.kind} "
                           f"(text datasets: austen, wikitext2, ptb, bookcorpus)")
    rows = load_dataset(dataset, split=split)
    texts = [t for t in rows[:max_texts]["text"] if t and t.strip()]
    total = num_samples + heldout + pool + confirm
    windows = token_windows(tokenizer, texts, total, seq_len, seed, f"{dataset}/{split}")
    ends = torch.tensor([num_samples, heldout, pool, confirm]).cumsum(0).tolist()
    return Calibration(
        samples=windows[:num_samples],
        heldout=windows[ends[0]:ends[1]] if heldout else None,
        pool=windows[ends[1]:ends[2]] if pool else None,
        confirm=windows[ends[2]:ends[3]] if confirm else None,
        dataset=dataset, split=split, seq_len=seq_len)
