"""Perplexity of causal LMs, with the protocol written into the result.

Protocol (LLM-Pruner's): the evaluation texts are joined with blank lines, tokenized once,
cut into non-overlapping windows of ``seq_len`` tokens (the last partial window is dropped),
and perplexity = exp(mean next-token negative log-likelihood over all predicted tokens).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm


@dataclass
class PerplexityResult:
    perplexity: float
    tokens: int  # predicted tokens
    windows: int
    seq_len: int
    protocol: str

    def as_dict(self) -> dict:
        return asdict(self)


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _token_prefix(tokenizer, texts: list[str], needed: int | None) -> torch.Tensor:
    """Token ids of the joined texts; with ``needed``, only of a prefix long enough for it
    (tokenizing a whole test set to evaluate a few windows is most of the cost)."""
    joined = "\n\n".join(texts)
    chars = len(joined) if needed is None else min(len(joined), 8 * needed)
    while True:
        ids = tokenizer(joined[:chars], add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        if needed is None or len(ids) >= needed + 1 or chars >= len(joined):
            return ids
        chars = min(len(joined), chars * 2)


@torch.no_grad()
def nll_of_windows(model, windows: torch.Tensor, batch_size: int = 8,
                   progress: bool = False) -> tuple[float, int]:
    """Summed next-token NLL and the number of predicted tokens over ``windows`` [N, L]."""
    model.eval()
    device, total, count = _device(model), 0.0, 0
    batches = range(0, len(windows), batch_size)
    for start in tqdm(batches, desc="perplexity", disable=not progress, leave=False):
        ids = windows[start:start + batch_size].to(device)
        logits = model(input_ids=ids).logits[:, :-1]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp64 stays fp64
        targets = ids[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 targets.reshape(-1), reduction="sum")
        total += float(loss)
        count += targets.numel()
    return total, count


def perplexity_of_windows(model, windows: torch.Tensor, batch_size: int = 8) -> float:
    """exp(mean NLL) over token windows (what search objectives call)."""
    total, count = nll_of_windows(model, windows, batch_size)
    return math.exp(total / count)


def perplexity(model, tokenizer, texts: list[str], seq_len: int = 128, batch_size: int = 8,
               max_windows: int | None = None, progress: bool = True,
               dataset: str = "text") -> PerplexityResult:
    """Perplexity of ``model`` on ``texts`` under the protocol in the module docstring."""
    ids = _token_prefix(tokenizer, texts, None if max_windows is None else max_windows * seq_len)
    n = len(ids) // seq_len
    if n == 0:
        from lmprune.errors import LmpruneError

        raise LmpruneError(f"the evaluation text has {len(ids)} tokens, fewer than one window "
                           f"of {seq_len}")
    if max_windows is not None:
        n = min(n, max_windows)
    windows = ids[: n * seq_len].view(n, seq_len)
    total, count = nll_of_windows(model, windows, batch_size, progress)
    protocol = (f"{dataset}: texts joined with blank lines, {n} non-overlapping windows of "
                f"{seq_len} tokens, exp(mean next-token NLL over {count} tokens)")
    return PerplexityResult(math.exp(total / count), count, n, seq_len, protocol)
