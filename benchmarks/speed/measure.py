"""Measurements of the speed benchmark; each returns plain data (errors recorded, not raised).

* :func:`bandwidth`: device-to-device copy bandwidth (bytes read + written per second), the
  practical memory bandwidth the weight-read floor is computed with;
* :func:`encoder` / :func:`decoder`: lmprune's own protocols
  (``lmprune.evaluation.efficiency.measure_inference``, ``lmprune.generation.bench``);
* :func:`taylor_cost`: wall time and peak memory of lmprune's public Taylor scorer;
* :func:`gemm` and :func:`sdpa`: micro-benchmarks that isolate two hypotheses of issue #13
  (unaligned FFN widths; query heads per key/value group in attention at decode);
* :func:`ops_per_step`, :func:`graph_breaks`, :func:`hooks`: CPU-side evidence (kernel
  count of one decode step, torch.compile graph breaks, hooks left on modules).
"""
from __future__ import annotations

import contextlib
import gc
import statistics
import time
import traceback

import torch

from lmprune.device import synchronize as sync
from lmprune.evaluation.efficiency import measure_inference
from lmprune.generation.bench import measure_decoding


def free(device: torch.device) -> None:
    """Forget compiled graphs and cached blocks between models."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def guarded(fn, *args, **kwargs) -> dict:
    """``fn(...)`` as a dict, or ``{"error": ...}`` (the benchmark goes on)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # one failed measurement must not lose the others
        return {"error": f"{type(exc).__name__}: {exc}"[:500],
                "where": traceback.format_exc(limit=3)[-800:]}


def timed(fn, device, repeats: int = 10, warmup: int = 3) -> float:
    """Median seconds of ``fn()``."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bandwidth(device: torch.device, quick: bool) -> dict:
    size = (2**24 if quick else 2**30) // 2  # elements of bf16: 16 MB / 1 GiB
    src = torch.empty(size, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    seconds = timed(lambda: dst.copy_(src), device, repeats=5, warmup=2)
    return {"bytes_per_s": 2 * src.numel() * src.element_size() / seconds,
            "method": "device copy of one tensor (read + write), median of 5"}


def encoder(model, batch_sizes, seq_len: int, quick: bool, compile: str | None = None) -> dict:
    cuda = next(model.parameters()).is_cuda
    with graph_runs() as runs:
        out = measure_inference(model, batch_sizes=tuple(batch_sizes), seq_len=seq_len,
                                warmup=5 if cuda else 1, repeats=20 if cuda else 2,
                                max_seconds=3.0 if cuda else 5.0, compile=compile)
    if compile is not None:
        out["cudagraph_runs"] = dict(runs)
    return out


@contextlib.contextmanager
def graph_runs():
    """Counts, while inside, how often the CUDA-graph trees of ``reduce-overhead`` modes ran a
    function as a warm-up (kernels launched one by one), recorded a graph, or replayed one:
    a compiled measurement whose calls are not replays pays host time per kernel (the
    compiled encoder's numbers moved 1.3-2.0x between runs, BENCHMARKS.md). Private torch
    classes: counts nothing where they are missing."""
    counts = {"warmup": 0, "record": 0, "replay": 0}
    try:
        from torch._inductor import cudagraph_trees as trees
        targets = [(trees.CUDAWarmupNode, "run", "warmup"),
                   (trees.CUDAGraphNode, "run_first_inputs", "record"),
                   (trees.CUDAGraphNode, "run_graph", "replay")]
    except (ImportError, AttributeError):
        targets = []
    originals = []
    for cls, name, key in targets:
        original = getattr(cls, name, None)
        if original is None:
            continue

        def counted(*args, _original=original, _key=key, **kwargs):
            counts[_key] += 1
            return _original(*args, **kwargs)

        originals.append((cls, name, original))
        setattr(cls, name, counted)
    try:
        yield counts
    finally:
        for cls, name, original in originals:
            setattr(cls, name, original)


def decoder(model, batch_size: int, mode: str, prompt_len: int, new_tokens: int,
            repeats: int, compile_mode: str = "reduce-overhead",
            attention: str = "sdpa") -> dict:
    return measure_decoding(model, batch_size, prompt_len, new_tokens, mode, repeats,
                            compile_mode=compile_mode, attention=attention).as_dict()


def random_windows(model, count: int, length: int, seed: int = 0) -> torch.Tensor:
    """Seeded random token windows [count, length] (ids from 10 up: no special tokens)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(10, model.config.vocab_size, (count, length), generator=g)


def timed_peak(fn, device: torch.device) -> dict:
    """Seconds and peak memory of ``fn()`` (caches freed first); ``fn`` returns extra fields."""
    from lmprune.evaluation.memory import track_peak_memory

    free(device)
    sync(device)
    start = time.perf_counter()
    with track_peak_memory(device) as box:
        extra = fn() or {}
    sync(device)
    return {"seconds": time.perf_counter() - start, "peak_memory": box.result.as_dict(), **extra}


def taylor_cost(model, structure, samples, importance: str, batch_size=None) -> dict:
    """Wall time and peak memory of Taylor scoring (heads and neurons, all layers)."""
    from lmprune.scorers.taylor import taylor_scores

    device = next(model.parameters()).device

    def score():
        return {"scores": taylor_scores(model, structure, samples.to(device),
                                        importance=importance, kinds=("heads", "neurons"),
                                        batch_size=batch_size, progress=False)}

    out = timed_peak(score, device)
    model.zero_grad(set_to_none=True)
    return {"importance": importance, "batch_size": batch_size, "samples": list(samples.shape),
            **out}


def gemm(device: torch.device, dtype: torch.dtype, hidden: int, widths, tokens,
         quick: bool) -> list[dict]:
    """x[tokens, hidden] @ W[hidden, width]^T for each width: TFLOP/s shows the alignment."""
    rows = []
    for n in tokens:
        x = torch.randn(n, hidden, device=device, dtype=dtype)
        for width in widths:
            w = torch.randn(width, hidden, device=device, dtype=dtype)
            seconds = timed(lambda: torch.nn.functional.linear(x, w), device,
                            repeats=5 if quick else 50, warmup=2 if quick else 10)
            rows.append({"tokens": n, "hidden": hidden, "width": width, "us": 1e6 * seconds,
                         "tflops": 2 * n * hidden * width / seconds / 1e12})
    return rows


def sdpa(device: torch.device, dtype: torch.dtype, shapes, batch: int, context: int,
         quick: bool) -> list[dict]:
    """Decode-step attention through transformers' own SDPA path (repeat_kv when needed) for
    (query heads, key/value heads, head_dim): time per call and per query head."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    class _Module(torch.nn.Module):
        is_causal = True

    rows = []
    for heads, kv, head_dim in shapes:
        module = _Module()
        module.num_key_value_groups = heads // kv
        q = torch.randn(batch, heads, 1, head_dim, device=device, dtype=dtype)
        k = torch.randn(batch, kv, context, head_dim, device=device, dtype=dtype)
        v = torch.randn_like(k)
        mask = torch.zeros(batch, 1, 1, context, device=device, dtype=torch.bool) == 0
        seconds = timed(lambda: sdpa_attention_forward(module, q, k, v, mask, scaling=head_dim ** -0.5),
                        device, repeats=5 if quick else 50, warmup=2 if quick else 10)
        rows.append({"heads": heads, "kv_heads": kv, "head_dim": head_dim, "batch": batch,
                     "context": context, "us": 1e6 * seconds, "us_per_head": 1e6 * seconds / heads})
    return rows


def ops_per_step(model, batch: int = 1, prompt: int = 8) -> dict:
    """Aten operations (≈ GPU kernel launches in eager mode) of one cached decode step."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from lmprune.structures.kv_cache import cache_arguments, output_cache

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count += 1
            return func(*args, **(kwargs or {}))

    device = next(model.parameters()).device
    ids = torch.randint(0, model.config.vocab_size, (batch, prompt + 1), device=device)
    with torch.no_grad():
        cache = output_cache(model(ids[:, :prompt], use_cache=True))
        with Count() as counter:
            model(ids[:, prompt:], **cache_arguments(model, cache))
    return {"aten_ops": counter.count}


def graph_breaks(model) -> dict:
    """torch._dynamo.explain of one cached decode step: graphs, breaks and their reasons."""
    from lmprune.structures.kv_cache import cache_arguments, output_cache

    device = next(model.parameters()).device
    ids = torch.randint(0, model.config.vocab_size, (1, 9), device=device)
    with torch.no_grad():
        cache = output_cache(model(ids[:, :8], use_cache=True))

        def step(token):
            return model(token, **cache_arguments(model, cache)).logits

        torch._dynamo.reset()
        explained = torch._dynamo.explain(step)(ids[:, 8:])
    reasons = sorted({str(getattr(b, "reason", b))[:160] for b in explained.break_reasons})
    return {"graphs": explained.graph_count, "graph_breaks": explained.graph_break_count,
            "reasons": reasons[:5]}


def hooks(model) -> dict:
    return {"forward_hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks)
                                 for m in model.modules()),
            "requires_grad": sum(p.requires_grad for p in model.parameters())}
