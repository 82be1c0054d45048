"""Where and in which precision models run: one place that resolves ``device`` and ``dtype``.

Every command that runs a model (prune, eval, recover, train, demo, ablate, generate, bench)
reads the top-level ``device`` field of its config (``--device`` on the command line):

* ``auto`` (default): the first GPU when ``torch.cuda.is_available()``, else Apple's ``mps``
  when available, else the CPU;
* ``cpu``, ``cuda`` (the current GPU), ``cuda:N``, ``mps``: exactly that device; asking for one
  that this machine (or this build of torch) lacks is an error before any work starts;
* ``cuda:0,1`` (a list of GPUs): only with ``placement: spread``, which puts the model's layers
  over those GPUs (:mod:`lmprune.placement`; there ``auto`` and ``cuda`` mean every visible GPU).

``model.dtype: auto`` picks the precision per purpose (:func:`resolve_dtype`):

* ``inference`` (prune: scoring and evaluation; eval, generate, bench, recover's frozen base):
  bfloat16 on a GPU that supports it (float16 on one that does not), float32 on the CPU.
  Taylor importance still accumulates in float32 from bfloat16 weights and gradients
  (scorers/taylor.py), perplexity reduces its log-probabilities in float32;
* ``training`` (``lmprune train``: APT, CoFi, Kwon and the other fine-tuning methods):
  float32 weights everywhere. Their masks, L0 gates and growing adapters take small updates
  that bfloat16 weights would round away; ``model.dtype=bfloat16`` forces bfloat16.
"""
from __future__ import annotations

import contextlib
import re

import torch

from lmprune.errors import LmpruneError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps, cuda:0,1 (with placement spread)"
_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?|cuda:\d+(,(cuda:)?\d+)+)$")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PURPOSES = ("inference", "training")


def device_problem(name: str) -> str | None:
    """Why ``name`` is not a device name (syntax only), or None (for config validation)."""
    if isinstance(name, str) and _PATTERN.match(name.strip()):
        return None
    return f"must be one of {DEVICE_CHOICES}, got {name!r}"


def gpu_list(name: str) -> list[int] | None:
    """The GPU indices of a list such as ``cuda:0,1`` or ``cuda:0,cuda:2``; None for one device."""
    name = name.strip()
    if "," not in name or device_problem(name):
        return None
    return [int(part.split(":")[-1]) for part in name.split(",")]


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The device ``name`` stands for on this machine; a clear error when it is not here."""
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip()
    problem = device_problem(name)
    if problem:
        raise LmpruneError(f"device: {problem}")
    if gpu_list(name):
        raise LmpruneError(f"device {name} names several GPUs: that needs placement: spread "
                           f"(--placement spread), which spreads the model's layers over them")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise LmpruneError("device mps was requested but torch.backends.mps is not available "
                               "here; use --device auto or --device cpu")
        return torch.device("mps")
    return _cuda_device(name)


def _cuda_device(name: str) -> torch.device:
    check_gpus(name)
    index = int(name.split(":")[1]) if ":" in name else torch.cuda.current_device()
    return torch.device("cuda", index)


def check_gpus(name: str, indices: list[int] | None = None) -> None:
    """Raise unless this machine has CUDA GPUs with ``indices`` (default: the index in
    ``name``, ``cuda:N``); ``name`` is what the user asked for, quoted in the error."""
    if not torch.cuda.is_available():
        build = torch.__version__ + ("" if torch.version.cuda else ", a build without CUDA")
        raise LmpruneError(f"device {name} was requested but no CUDA GPU is available (torch "
                           f"{build}); use --device auto (the GPU when there is one) or "
                           f"--device cpu")
    count = torch.cuda.device_count()
    if indices is None:
        indices = [int(name.split(":")[1])] if ":" in name else []
    if any(index >= count for index in indices):
        raise LmpruneError(f"device {name} was requested but this machine has {count} GPU(s) "
                           f"(cuda:0..cuda:{count - 1})")


def resolve_dtype(dtype: str | torch.dtype, device: torch.device,
                  purpose: str = "inference") -> torch.dtype:
    """The precision a model is loaded in: ``dtype`` itself, or the choice ``auto`` makes."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    if dtype != "auto":
        if dtype not in DTYPES:
            raise LmpruneError(f"unknown dtype {dtype!r}; use auto, {', '.join(DTYPES)}")
        return DTYPES[dtype]
    if purpose == "training" or device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def accelerator_kwargs(name: str) -> dict:
    """Keyword arguments for ``accelerate.Accelerator`` that honour the ``device`` setting.

    accelerate puts each process on its own GPU (``accelerate launch``); lmprune only tells it
    to stay on the CPU, and for an explicit ``cuda:N`` in a single process makes N current.
    A list of GPUs (placement spread) runs one process whose model is already placed.
    """
    import os

    if gpu_list(name):
        return {"cpu": False}
    device = resolve_device(name)
    if device.type == "cuda" and ":" in str(name) and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        torch.cuda.set_device(device)
    return {"cpu": device.type == "cpu"}


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timings must end there); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe_device(device: torch.device) -> str:
    """``cuda:0 (NVIDIA H200)`` or ``cpu``: what a command prints about where it runs."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def place(model: torch.nn.Module, device: torch.device,
          dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Move ``model`` to ``device`` (and ``dtype``); returns it."""
    return model.to(device=device) if dtype is None else model.to(device=device, dtype=dtype)


def announce(command: str, device, dtype: torch.dtype | None = None, log=print) -> None:
    """Print the one line every command prints about where (and in what precision) it runs;
    ``device`` is a torch device or a :class:`lmprune.placement.Placement`."""
    precision = f", {str(dtype).removeprefix('torch.')}" if dtype is not None else ""
    where = device.describe() if hasattr(device, "describe") else describe_device(device)
    log(f"[{command}] device: {where}{precision}")


def attention_for_varied_shapes(device) -> contextlib.AbstractContextManager:
    """Scaled-dot-product attention without cuDNN's backend on a GPU (a no-op elsewhere).

    For bfloat16 PyTorch may pick cuDNN's attention, which builds an execution plan the first
    time it meets a shape: 60-950 ms per new sequence length on an H200, against ~0.2 ms for
    FlashAttention (``benchmarks/apt_base/sdpa_first_call.py``). Work whose batches are padded
    to their longest example (training, dev evaluation, zero-shot) meets a new shape every few
    batches; inside this context PyTorch chooses among Flash, memory-efficient and math
    attention instead. Fixed-shape measurements (``lmprune bench``) keep the default choice.
    """
    if torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                        SDPBackend.MATH])
