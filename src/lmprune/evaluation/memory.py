"""Peak memory of a block of code, labelled by what was actually measured.

Two measurements exist and they are not comparable, so every figure carries its kind:

- ``cuda_max_allocated``: ``torch.cuda.max_memory_allocated`` on the device, its peak
  statistics reset when the block starts. Tensors allocated by PyTorch only (weights,
  activations, gradients, optimizer state); not the CUDA context, not the caching
  allocator's reserve.
- ``cpu_rss_peak``: the resident set size of the whole Python process, sampled every 5 ms
  while the block runs (the peak since the block started; what was resident before the
  block counts too). It includes the interpreter, every imported library and the weights of
  everything loaded, not only the model being measured, and a spike shorter than the
  sampling interval can be missed.

Comparing two models (dense and pruned) needs each one's own memory, whatever else the
process holds (the dense model's leftovers, a teacher, the allocator's free pages).
:func:`model_peak_memory` measures one call of a model that way:

- ``cuda_model_peak``: the model's weights plus the peak it allocated above what was
  allocated before the call (``torch.cuda.reset_peak_memory_stats`` and
  ``max_memory_allocated`` around the call): activations, KV cache, workspaces;
- ``cpu_tensor_bytes``: the model's weights + the KV cache the call returned + its largest
  single activation (the biggest output of a leaf module), added up from tensor sizes. An
  estimate of the model alone (the CPU allocator keeps no per-tensor peak), not process RSS.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

CUDA_KIND = "cuda_max_allocated"
CPU_KIND = "cpu_rss_peak"
MODEL_CUDA_KIND = "cuda_model_peak"
MODEL_CPU_KIND = "cpu_tensor_bytes"
CPU_NOW_KIND = "cpu_rss"

LABELS = {
    CUDA_KIND: "GPU peak allocated (torch.cuda.max_memory_allocated)",
    CPU_KIND: "process RSS peak (CPU; not comparable to GPU figures)",
    MODEL_CUDA_KIND: "GPU, this model alone: weights + peak allocated above them during the run "
                     "(torch.cuda.max_memory_allocated)",
    MODEL_CPU_KIND: "CPU, this model alone: weights + KV cache + largest activation, from tensor "
                    "sizes (an estimate, not process RSS)",
    CPU_NOW_KIND: "process RSS at the end of the interval (CPU; freed memory may stay "
                  "resident; not comparable to GPU figures)",
}


@dataclass
class PeakMemory:
    """A peak in bytes and the kind of measurement it comes from (see the module docstring)."""

    bytes: int
    kind: str  # CUDA_KIND or CPU_KIND

    @property
    def mb(self) -> float:
        return self.bytes / 2**20

    def as_dict(self) -> dict:
        """``{"mb", "kind", "label"}``: what metrics.json and the reports hold."""
        return {"mb": round(self.mb, 3), "kind": self.kind,
                "label": LABELS.get(self.kind, self.kind)}


@dataclass
class PeakMemoryBox:
    """What :func:`track_peak_memory` yields; ``result`` is filled when the block exits
    (with several GPUs: the largest per-GPU peak, each GPU's in ``per_device``)."""

    device: torch.device
    result: PeakMemory | None = None
    per_device: dict[str, PeakMemory] = field(default_factory=dict)
    carried: dict[str, int] = field(default_factory=dict)  # peaks read (and reset) inside
    # the block by interval_peak, per GPU


_OPEN: list[PeakMemoryBox] = []  # trackers whose block is running


class RssSampler:
    """Peak resident set size of this process while the block runs (CPU).

    A daemon thread samples ``psutil.Process().memory_info().rss`` every ``interval``
    seconds; ``peak`` also includes the value at entry and at exit.
    """

    def __init__(self, interval: float = 0.005):
        import psutil

        self.process, self.interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self):
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


def _as_device(device) -> torch.device:
    if device is None:
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


@contextmanager
def track_peak_memory(device=None) -> Iterator[PeakMemoryBox]:
    """Measure the peak memory of the ``with`` block on ``device`` (None: CPU), or on each
    GPU of a list of devices (a model spread over GPUs, :mod:`lmprune.placement`).

    On CUDA the device's peak statistics are reset at entry (so an enclosing measurement on
    the same device loses its earlier peak); elsewhere the process RSS is sampled. The result
    is filled even when the block raises::

        with track_peak_memory("cpu") as box:
            model(**batch)
        print(box.result.as_dict())
    """
    devices = [_as_device(d) for d in (device if isinstance(device, (list, tuple))
                                       else [device])]
    gpus = list(dict.fromkeys(d for d in devices if d.type == "cuda"))
    box = PeakMemoryBox(devices[0])
    if gpus:
        for gpu in gpus:
            torch.cuda.synchronize(gpu)
            torch.cuda.reset_peak_memory_stats(gpu)
        _OPEN.append(box)
        try:
            yield box
        finally:
            _OPEN.remove(box)
            for gpu in gpus:
                torch.cuda.synchronize(gpu)
                peak = max(int(torch.cuda.max_memory_allocated(gpu)),
                           box.carried.get(str(gpu), 0))
                box.per_device[str(gpu)] = PeakMemory(peak, CUDA_KIND)
            box.result = max(box.per_device.values(), key=lambda p: p.bytes)
        return
    sampler = RssSampler()
    try:
        with sampler:
            yield box
    finally:
        box.result = PeakMemory(int(sampler.peak), CPU_KIND)


def tensor_bytes(*objects: Any, _depth: int = 6) -> int:
    """Bytes of the distinct tensor storages reachable from ``objects``.

    Walks tensors, modules (parameters and buffers), mappings, sequences and plain objects'
    attributes (a transformers ``Cache`` and its layers), ``_depth`` levels deep; a storage
    shared by several tensors (tied weights, views) counts once.
    """
    seen: set[tuple[str, int]] = set()
    visited: set[int] = set()
    total = 0

    def visit(obj: Any, depth: int) -> None:
        nonlocal total
        if isinstance(obj, torch.Tensor):
            if obj.device.type == "meta":
                return
            storage = obj.untyped_storage()
            key = (str(obj.device), storage.data_ptr())
            if key not in seen:
                seen.add(key)
                total += storage.nbytes()
            return
        if depth == 0 or id(obj) in visited or isinstance(obj, (str, bytes, int, float, bool)):
            return
        visited.add(id(obj))
        if isinstance(obj, nn.Module):
            children = [*obj.parameters(), *obj.buffers()]
        elif isinstance(obj, dict):
            children = list(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            children = list(obj)
        else:
            children = list(getattr(obj, "__dict__", {}).values())
        for child in children:
            visit(child, depth - 1)

    for obj in objects:
        visit(obj, _depth)
    return total


class _LargestActivation:
    """Forward hooks on every leaf module recording the largest output seen."""

    def __init__(self, model: nn.Module):
        self.bytes = 0
        leaves = [m for m in model.modules() if next(m.children(), None) is None]
        self.handles = [m.register_forward_hook(self._hook) for m in leaves]

    def _hook(self, module, args, output) -> None:
        self.bytes = max(self.bytes, tensor_bytes(output, _depth=2))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def model_peak_memory(model: nn.Module, run: Callable[[], Any], device=None,
                      cache_of: Callable[[Any], Any] | None = None) -> PeakMemory:
    """Memory of ``model`` alone during one call of ``run`` (see the module docstring).

    ``run`` calls the model (a forward, a ``generate``); ``cache_of(result)`` returns the KV
    cache it built, counted on CPU (on CUDA it is part of the measured peak).
    """
    device = _as_device(device)
    weights = tensor_bytes(model)
    if device.type == "cuda":
        # a model spread over GPUs: the peaks above what each of its GPUs held, added up
        gpus = list(dict.fromkeys(t.device for t in model.parameters() if t.is_cuda)) or [device]
        before = {}
        for gpu in gpus:
            torch.cuda.synchronize(gpu)
            before[gpu] = torch.cuda.memory_allocated(gpu)
            torch.cuda.reset_peak_memory_stats(gpu)
        run()
        extra = 0
        for gpu in gpus:
            torch.cuda.synchronize(gpu)
            extra += max(0, int(torch.cuda.max_memory_allocated(gpu) - before[gpu]))
        return PeakMemory(weights + extra, MODEL_CUDA_KIND)
    largest = _LargestActivation(model)
    try:
        result = run()
    finally:
        largest.remove()
    cache = tensor_bytes(cache_of(result)) if cache_of is not None else 0
    return PeakMemory(weights + cache + largest.bytes, MODEL_CPU_KIND)
def interval_peak(device=None) -> PeakMemory:
    """Memory of the interval since the previous call (a training curve's point).

    On CUDA: ``torch.cuda.max_memory_allocated`` since the last call, then the peak
    statistics are reset; a :func:`track_peak_memory` block around the calls keeps the
    largest of these peaks, so its own figure stays the block's peak. Elsewhere: the
    process's resident set now (labelled so: memory freed by the allocator may stay
    resident, so it shows a fall late or not at all; see :func:`tensor_bytes`).
    """
    device = _as_device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = int(torch.cuda.max_memory_allocated(device))
        for box in _OPEN:
            key = str(device)
            box.carried[key] = max(box.carried.get(key, 0), peak)
        torch.cuda.reset_peak_memory_stats(device)
        return PeakMemory(peak, CUDA_KIND)
    import psutil

    return PeakMemory(int(psutil.Process().memory_info().rss), CPU_NOW_KIND)
