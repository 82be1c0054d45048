"""Prefill and decode throughput of a decoder, timed apart, in each decoding mode.

Protocol of :func:`measure_decoding` (the same for every model, so ratios are speedups):

* ``batch_size`` random prompts (seeded) of exactly ``prompt_len`` tokens, no padding;
* one untimed warm-up generation (it includes compilation in ``compile`` mode; its wall time
  is reported as ``first_call_s``), then ``repeats`` timed generations;
* **prefill**: the prompt's forward pass that fills the KV cache (and picks the first token),
  timed alone: ``prefill_tokens_per_s = batch * prompt_len / seconds``;
* **decode**: the following ``new_tokens - 1`` single-token steps (greedy, no early stop),
  timed together with one synchronisation at the end:
  ``decode_tokens_per_s = batch / seconds_per_step``;
* the median over the repeats of each; peak memory of the timed runs
  (``torch.cuda.max_memory_allocated`` on CUDA, sampled process RSS on CPU, labelled).

Compare a decode time with :func:`lmprune.evaluation.ideal.weight_read_floor_ms`: a decode
step must read every weight once, so bytes / memory bandwidth is its lower bound.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from lmprune.device import synchronize
from lmprune.errors import LmpruneError
from lmprune.evaluation.memory import track_peak_memory
from lmprune.generation.fast import MODES, Decoder


@dataclass
class DecodeSpeed:
    mode: str
    batch_size: int
    prompt_len: int
    new_tokens: int
    prefill_ms: float
    prefill_tokens_per_s: float
    decode_ms_per_step: float
    decode_tokens_per_s: float
    first_call_s: float  # the warm-up generation (compilation included in compile mode)
    repeats: int
    peak_memory_mb: float | None
    memory_kind: str
    device: str
    compile_mode: str | None = None  # torch.compile mode of the compile mode's decode step
    attention: str = "sdpa"  # the decode steps' attention: filled (filled slots only) or sdpa

    def as_dict(self) -> dict:
        return asdict(self)


def _prompt(model: nn.Module, batch: int, length: int, seed: int, device) -> torch.Tensor:
    vocab = int(model.config.vocab_size)
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(min(10, vocab - 1), vocab, (batch, length), generator=generator).to(device)


def _run(decoder: Decoder, prompt: torch.Tensor, new_tokens: int) -> tuple[float, float]:
    """(prefill seconds, decode seconds) of one generation, synchronised."""
    device = prompt.device
    synchronize(device)
    start = time.perf_counter()
    state = decoder.prefill(prompt, new_tokens)
    synchronize(device)
    middle = time.perf_counter()
    decoder.decode(state, new_tokens - 1)
    synchronize(device)
    return middle - start, time.perf_counter() - middle


def measure_decoding(model: nn.Module, batch_size: int, prompt_len: int = 128,
                     new_tokens: int = 64, mode: str = "compile", repeats: int = 3,
                     seed: int = 0, compile_mode: str = "reduce-overhead",
                     attention: str = "sdpa") -> DecodeSpeed:
    """Time prefill and decode of ``model`` (on its device) as the module docstring says."""
    if mode not in MODES:
        raise LmpruneError(f"unknown decoding mode {mode!r}; use one of {', '.join(MODES)}")
    if batch_size < 1 or prompt_len < 1 or new_tokens < 2 or repeats < 1:
        raise LmpruneError(f"need batch_size, prompt_len, repeats >= 1 and new_tokens >= 2, got "
                           f"{batch_size}, {prompt_len}, {repeats}, {new_tokens}")
    device = next(model.parameters()).device
    decoder = Decoder(model, mode, compile_mode, attention)
    prompt = _prompt(model, batch_size, prompt_len, seed, device)
    start = time.perf_counter()
    _run(decoder, prompt, new_tokens)
    first = time.perf_counter() - start
    with track_peak_memory(device) as box:
        runs = [_run(decoder, prompt, new_tokens) for _ in range(repeats)]
    prefill = statistics.median(r[0] for r in runs)
    step = statistics.median(r[1] for r in runs) / (new_tokens - 1)
    peak = box.result
    return DecodeSpeed(mode, batch_size, prompt_len, new_tokens, 1000 * prefill,
                       batch_size * prompt_len / prefill, 1000 * step, batch_size / step, first,
                       repeats, None if peak is None else round(peak.mb, 1),
                       "-" if peak is None else peak.kind, str(device),
                       compile_mode if mode == "compile" else None,
                       "filled" if decoder.filled else "sdpa")
