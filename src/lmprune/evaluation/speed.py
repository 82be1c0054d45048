"""Measured generation speed and memory: throughput, latency and peak memory per batch size.

Every speedup lmprune reports is a ratio of two of these measurements taken in the same
process on the same machine, never a ratio of parameter counts.

Protocol: random prompt tokens (``prompt_len``), greedy decoding of exactly ``new_tokens``
tokens with the KV cache, one warm-up run, then the median of ``repeats`` timed runs.
Throughput = batch * new_tokens / time; latency = time / new_tokens (per generated token)
and time to generate the whole batch. Memory: of the model alone during one untimed
generation (:func:`lmprune.evaluation.memory.model_peak_memory`; on CUDA weights + the peak
allocated above them, on CPU weights + KV cache + largest activation from tensor sizes),
whatever else the process holds, so a dense and a pruned model measured one after the other
in one process compare fairly. ``memory_kind`` and ``memory_label`` say which.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch

from lmprune.evaluation.memory import model_peak_memory


@dataclass
class SpeedResult:
    batch_size: int
    prompt_len: int
    new_tokens: int
    tokens_per_s: float
    seconds_per_batch: float
    ms_per_token: float
    peak_memory_mb: float
    memory_kind: str  # memory.MODEL_CUDA_KIND or MODEL_CPU_KIND
    device: str
    memory_label: str = ""  # what memory_kind measured, in words

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
    def generate_once():
        return model.generate(prompt, return_dict_in_generate=True, **kwargs)

    if device.type == "cuda":  # warm-up; on CPU the memory run below is the warm-up
        generate_once()
    memory = model_peak_memory(model, generate_once, device,
                               cache_of=lambda out: getattr(out, "past_key_values", None))
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        model.generate(prompt, **kwargs)
        _sync(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    memory_info = memory.as_dict()
    return SpeedResult(batch_size, prompt_len, new_tokens, batch_size * new_tokens / seconds,
                       seconds, 1000 * seconds / new_tokens, memory.mb, memory.kind,
                       str(device), memory_info["label"])


def measure_speed(model, batch_sizes=(1, 8, 32), prompt_len: int = 64, new_tokens: int = 32,
                  repeats: int = 3) -> list[SpeedResult]:
    return [measure_generation(model, b, prompt_len, new_tokens, repeats) for b in batch_sizes]


def speedup(pruned: list[SpeedResult], dense: list[SpeedResult]) -> dict[int, float]:
    """Measured throughput ratio pruned / dense per batch size."""
    base = {r.batch_size: r.tokens_per_s for r in dense}
    return {r.batch_size: r.tokens_per_s / base[r.batch_size] for r in pruned if r.batch_size in base}
