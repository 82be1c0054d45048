"""Measured generation speed and memory: throughput, latency and peak memory per batch size.

Every speedup lmprune reports is a ratio of two of these measurements taken in the same
process on the same machine, never a ratio of parameter counts.

Protocol: random prompt tokens (``prompt_len``), greedy decoding of exactly ``new_tokens``
tokens with the KV cache, one warm-up run, then the median of ``repeats`` timed runs.
Throughput = batch * new_tokens / time; latency = time / new_tokens (per generated token)
and time to generate the whole batch. Peak memory: on CUDA ``torch.cuda.max_memory_allocated``
during the runs; on CPU the process's resident set size, sampled every 5 ms during the
runs (labelled as such: it includes everything the process holds, not only the model).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch

from lmprune.evaluation.memory import RssSampler as _RssSampler


@dataclass
class SpeedResult:
    batch_size: int
    prompt_len: int
    new_tokens: int
    tokens_per_s: float
    seconds_per_batch: float
    ms_per_token: float
    peak_memory_mb: float
    memory_kind: str  # "cuda max_memory_allocated" or "cpu process RSS (sampled)"
    device: str

    def as_dict(self) -> dict:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_generation(model, batch_size: int, prompt_len: int = 64, new_tokens: int = 32,
                       repeats: int = 3, seed: int = 0) -> SpeedResult:
    """Time greedy generation of ``new_tokens`` tokens for ``batch_size`` random prompts."""
    model.eval()
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(10, vocab, (batch_size, prompt_len), generator=g).to(device)
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                  use_cache=True, pad_token_id=model.config.eos_token_id or 0,
                  attention_mask=torch.ones_like(prompt))
    model.generate(prompt, **kwargs)  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    sampler = _RssSampler() if device.type != "cuda" else None
    if sampler:
        sampler.__enter__()
    try:
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            model.generate(prompt, **kwargs)
            _sync(device)
            times.append(time.perf_counter() - start)
    finally:
        if sampler:
            sampler.__exit__(None, None, None)
    seconds = statistics.median(times)
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated"
    else:
        peak, kind = sampler.peak / 2**20, "cpu process RSS (sampled)"
    return SpeedResult(batch_size, prompt_len, new_tokens, batch_size * new_tokens / seconds,
                       seconds, 1000 * seconds / new_tokens, peak, kind, str(device))


def measure_speed(model, batch_sizes=(1, 8, 32), prompt_len: int = 64, new_tokens: int = 32,
                  repeats: int = 3) -> list[SpeedResult]:
    return [measure_generation(model, b, prompt_len, new_tokens, repeats) for b in batch_sizes]


def speedup(pruned: list[SpeedResult], dense: list[SpeedResult]) -> dict[int, float]:
    """Measured throughput ratio pruned / dense per batch size."""
    base = {r.batch_size: r.tokens_per_s for r in dense}
    return {r.batch_size: r.tokens_per_s / base[r.batch_size] for r in pruned if r.batch_size in base}
