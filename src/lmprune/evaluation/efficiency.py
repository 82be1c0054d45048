"""Efficiency of fine-tuned (and pruned) models: forward throughput and time to accuracy.

Protocol of :func:`measure_inference`, the same for the pruned and the dense model so that
their ratio is a measured speedup:

- inputs: random token ids (seeded) of exactly ``seq_len`` tokens, ``attention_mask`` all
  ones, one batch per batch size;
- the model's forward pass only, in ``torch.inference_mode`` and eval mode: encoders
  (BERT/RoBERTa classification or QA heads) get ``input_ids, attention_mask``; decoders
  (LLaMA, Qwen2, Mistral) a plain forward with ``use_cache=False`` (no KV cache is built);
  encoder-decoders (T5) the encoder input plus ``decoder_input_ids`` of length 1 (the
  decoder start token), i.e. the full encoder and one decoder step, which is what scoring a
  one-token label costs;
- ``warmup`` untimed forwards, then ``repeats`` timed ones (``torch.cuda.synchronize``
  around each on CUDA); latency is the median seconds per batch, throughput is
  batch / latency in samples per second;
- memory of the model alone during one more, untimed forward
  (:func:`lmprune.evaluation.memory.model_peak_memory`: on CUDA weights + the peak allocated
  above them, on CPU weights + largest activation from tensor sizes; labelled), so the dense
  and the pruned model measured in one process compare fairly;
- a batch size that runs out of memory is recorded as such, not raised, and larger batch
  sizes are then skipped.
"""
from __future__ import annotations

import inspect
import math
import statistics
import time

import torch

from lmprune.errors import LmpruneError
from lmprune.evaluation.memory import model_peak_memory

DECODER_INPUT_LEN = 1


def _device_of(model, device) -> torch.device:
    if device is None:
        device = next(model.parameters(), torch.empty(0)).device
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _inputs(model, batch: int, seq_len: int, vocab: int, device: torch.device) -> dict:
    """Random ids for one forward, shaped for the model's kind (see the module docstring)."""
    generator = torch.Generator().manual_seed(batch * 1_000_003 + seq_len)
    ids = torch.randint(0, vocab, (batch, seq_len), generator=generator).to(device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        start = getattr(config, "decoder_start_token_id", None)
        start = 0 if start is None else start
        inputs["decoder_input_ids"] = torch.full((batch, DECODER_INPUT_LEN), start,
                                                 dtype=ids.dtype, device=device)
    if "use_cache" in inspect.signature(model.forward).parameters:
        inputs["use_cache"] = False
    return inputs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text
                                              or "can't allocate memory" in text)


def _timed_forwards(forward, inputs: dict, device, repeats: int,
                    max_seconds: float | None) -> list[float]:
    """Seconds of each timed forward: ``repeats`` of them, fewer once ``max_seconds`` is spent."""
    times: list[float] = []
    while len(times) < repeats:
        _sync(device)
        start = time.perf_counter()
        forward(**inputs)
        _sync(device)
        times.append(time.perf_counter() - start)
        if max_seconds is not None and sum(times) >= max_seconds:
            break
    return times


def _measure_batch(model, forward, inputs: dict, device, warmup: int, repeats: int,
                   max_seconds: float | None) -> dict:
    first = None
    if forward is not model:  # compiled: the first call compiles; it is not a warm-up
        forward(**inputs)
        first = forward.first_call_s[forward.shape_key(inputs)]
    spent = 0.0
    for _ in range(warmup):  # a warm-up slower than max_seconds ends the warm-up
        start = time.perf_counter()
        forward(**inputs)
        _sync(device)
        spent += time.perf_counter() - start
        if max_seconds is not None and spent >= max_seconds:
            break
    memory = model_peak_memory(model, lambda: forward(**inputs), device)
    times = _timed_forwards(forward, inputs, device, repeats, max_seconds)
    batch = inputs["input_ids"].shape[0]
    seconds = statistics.median(times)  # robust to a GPU clock ramp or a CPU hiccup
    out = {"samples_per_s": batch / seconds, "latency_ms": 1000 * seconds,
           "repeats": len(times), "peak_memory": memory.as_dict()}
    if first is not None:
        out["first_call_s"] = first
    return out


def _oom_entry(device: torch.device, reason: str) -> dict:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"samples_per_s": None, "latency_ms": None, "repeats": 0, "peak_memory": None,
            "error": reason}


def _check_arguments(batch_sizes, seq_len, warmup, repeats, max_seconds) -> None:
    problems = []
    if not batch_sizes or any(int(b) != b or b < 1 for b in batch_sizes):
        problems.append(f"batch_sizes must be positive integers, got {batch_sizes!r}")
    if seq_len < 1:
        problems.append(f"seq_len must be at least 1, got {seq_len}")
    if warmup < 0 or repeats < 1:
        problems.append(f"need warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")
    if max_seconds is not None and not max_seconds > 0:
        problems.append(f"max_seconds must be positive (or None), got {max_seconds}")
    if problems:
        raise LmpruneError("measure_inference: " + "; ".join(problems))


def measure_inference(model, batch_sizes=(32, 128), seq_len: int = 128, warmup: int = 2,
                      repeats: int = 5, device=None, vocab_size: int | None = None,
                      max_seconds: float | None = None, compile: str | None = None) -> dict:
    """Forward-only throughput, latency and peak memory per batch size (module docstring).

    ``compile``: None (eager), or a :data:`lmprune.evaluation.compiled.COMPILE_MODES` mode
    (``"reduce-overhead"``: CUDA graphs on a GPU) in which the forward is compiled once per
    batch size; that first call is untimed and reported as ``first_call_s``.

    ``device``: where to run (the model is moved there); None: where its parameters are.
    ``vocab_size``: ids are drawn from ``[0, vocab_size)``; None: ``model.config.vocab_size``.
    ``max_seconds``: per batch size, stop timing (and warming up) once this many seconds
    were spent; at least one timed forward always runs. Returns
    ``{"32": {"samples_per_s", "latency_ms", "repeats", "peak_memory"}, ...,
    "seq_len": 128, "device": "cuda:0"}``; an out-of-memory batch size has None numbers
    and an ``"error"``.
    """
    _check_arguments(batch_sizes, seq_len, warmup, repeats, max_seconds)
    if compile is not None:
        from lmprune.evaluation.compiled import check_mode

        check_mode(compile)
    device = _device_of(model, device)
    vocab = vocab_size or getattr(model.config, "vocab_size", None)
    if not vocab:
        raise LmpruneError("measure_inference: the model's config has no vocab_size; "
                           "pass vocab_size=")
    was_training = model.training
    model.to(device).eval()
    forward = model
    if compile is not None:
        from lmprune.evaluation.compiled import CompiledForward

        forward = CompiledForward(model, compile)
    result: dict = {}
    oom_at = None
    try:
        with torch.inference_mode():
            for batch in batch_sizes:
                if oom_at is not None and batch >= oom_at:
                    result[str(batch)] = _oom_entry(device, f"skipped: batch size {oom_at} "
                                                            "ran out of memory")
                    continue
                inputs = _inputs(model, int(batch), seq_len, vocab, device)
                try:
                    result[str(batch)] = _measure_batch(model, forward, inputs, device,
                                                        warmup, repeats, max_seconds)
                except RuntimeError as exc:
                    if not _is_oom(exc):
                        raise
                    del inputs
                    oom_at = batch
                    result[str(batch)] = _oom_entry(device, "out of memory")
    finally:
        model.train(was_training)
    extra = {"compile": compile} if compile is not None else {}
    return {**result, "seq_len": seq_len, "device": str(device), **extra}


def batch_results(inference: dict | None) -> dict[int, dict]:
    """``{batch size: entry}`` of a :func:`measure_inference` result (None: empty)."""
    if not inference:
        return {}
    return {int(k): v for k, v in inference.items() if str(k).isdigit() and isinstance(v, dict)}


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def relative(value, reference) -> float | None:
    """``value / reference``; None when either is missing or not a number, or reference is 0."""
    value, reference = _number(value), _number(reference)
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def time_to_accuracy(curve: list[dict], reference: float, fraction: float = 0.97,
                     key: str = "metric") -> float | None:
    """Seconds at which ``curve``'s ``key`` first reaches ``fraction * reference``; None if never.

    For metrics where higher is better. Entries are taken in order of their ``"seconds"``;
    those without a number under ``key`` (e.g. keep-ratio-only points) are skipped. Reaching
    means ``>=`` the target, with a tolerance of 1e-9 (relative) for float rounding.
    """
    reference, fraction_ok = _number(reference), (_number(fraction) or 0) > 0
    if reference is None or not fraction_ok:
        raise LmpruneError(f"time_to_accuracy needs a finite reference and a positive fraction, "
                           f"got reference={reference!r}, fraction={fraction!r}")
    target = fraction * reference
    points = []
    for index, entry in enumerate(curve):
        seconds = _number(entry.get("seconds")) if isinstance(entry, dict) else None
        if seconds is None:
            raise LmpruneError(f"curve entry {index} has no number under 'seconds': {entry!r}")
        points.append((seconds, index, _number(entry.get(key))))
    for seconds, _, value in sorted(points):
        if value is not None and value >= target - 1e-9 * abs(target):
            return seconds
    return None


def at_final_sparsity(curve: list[dict], slack: float = 0.01) -> list[dict]:
    """The curve points whose model is already as small as the final one.

    Time-to-accuracy only counts a model at the run's final sparsity: a dense model on its
    way to being pruned (APT before its last pruning event, lora-prune before the search) has
    not reached the accuracy *of the pruned model*. Points without ``keep_ratio`` all count.
    The final keep ratio is the last point's; ``slack`` absorbs rounding.
    """
    if not curve or curve[-1].get("keep_ratio") is None:
        return list(curve)
    final = float(curve[-1]["keep_ratio"])
    return [p for p in curve if p.get("keep_ratio") is None
            or float(p["keep_ratio"]) <= final + slack]
