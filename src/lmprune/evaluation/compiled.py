"""A compiled forward pass for fixed-shape inference: the fast path of encoders.

Why. A pruned encoder does less arithmetic per batch, but eager PyTorch still launches every
kernel from Python: on an H200, RoBERTa-base shape at batch 32 ran at ~7,000 samples/s
(~4.5 ms per batch) dense and at every pruned width (``benchmarks/speed/results/h200``), so
pruning could not show there, and at batch 128 a 60%-pruned model ran close to that floor. ``torch.compile`` fuses the
element-wise work (bias, GELU, residual adds, layer norms) and, in the modes with CUDA
graphs (``reduce-overhead``, ``max-autotune``), replays the whole forward as one graph, so
the GPU's time is what is measured.

:class:`CompiledForward` wraps a stock transformers model (nothing is patched): one graph per
input shape (``dynamic=False``: pruned widths stay constants, as a served model has them).
The outputs of a CUDA-graph replay live in memory the next call overwrites: use them (or
``.clone()`` them) before calling again.
"""
from __future__ import annotations

import contextlib
import time
import warnings
import weakref

import torch
from torch import nn

from lmprune.device import synchronize
from lmprune.errors import LmpruneError
from lmprune.evaluation.unpadded import attention_configs, unpadded_sdpa

#: torch.compile modes; those starting with reduce-overhead or max-autotune (not
#: ``-no-cudagraphs``) replay CUDA graphs on a GPU. ``+freezing``: Inductor's freezing on top
#: (inference only): the weights become constants of the graph, so matrix products that read
#: one input are concatenated into one (LLaMA's q/k/v and gate/up); the graph keeps its own
#: copies of the weights it concatenates (the model's stay, for eager calls), so weight memory
#: grows by that share (:func:`compile_config`); weights changed after compiling are picked up
#: by recompiling (:func:`refresh_frozen`).
COMPILE_MODES = ("reduce-overhead", "max-autotune", "default", "max-autotune-no-cudagraphs",
                 "reduce-overhead+freezing", "max-autotune+freezing")
_GRAPH_MODES = ("reduce-overhead", "max-autotune")
#: Recompilations allowed per compiled function (one per model and input shape); torch's
#: default of 8 would silently fall back to eager after 8 (model, shape) pairs.
RECOMPILE_LIMIT = 64


def allow_recompiles(limit: int = RECOMPILE_LIMIT) -> None:
    """Raise torch's per-function recompilation limit to at least ``limit``."""
    config = torch._dynamo.config
    for name in ("cache_size_limit", "recompile_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), limit))


def default_mode(device) -> str:
    """CUDA graphs where there are any (``reduce-overhead``); a plain compiled graph elsewhere."""
    return "reduce-overhead" if torch.device(device).type == "cuda" else "default"


def check_mode(mode: str) -> str:
    if mode not in COMPILE_MODES:
        raise LmpruneError(f"unknown compile mode {mode!r}; use one of {', '.join(COMPILE_MODES)}")
    return mode


def freezes(mode: str) -> bool:
    """Whether ``mode`` is a ``+freezing`` mode."""
    return check_mode(mode).endswith("+freezing")


def uses_graphs(mode: str) -> bool:
    """Whether ``mode`` replays CUDA graphs (outputs are overwritten by the next replay)."""
    return check_mode(mode).partition("+")[0] in _GRAPH_MODES


def compile_kwargs(mode: str) -> dict:
    """``torch.compile`` keyword arguments of a :data:`COMPILE_MODES` mode (``MODE+freezing``
    compiles as MODE; :func:`compile_config` adds the freezing)."""
    return {"mode": check_mode(mode).partition("+")[0]}


def compile_config(mode: str | None) -> contextlib.AbstractContextManager:
    """The Inductor settings to call a function compiled in ``mode`` under (compilation is
    lazy: it happens inside the first calls). ``+freezing``: ``freezing`` on. Passed as
    torch.compile's ``options`` instead, freezing made Inductor skip CUDA graphs for the
    static KV cache's in-place updates (H200, LLaMA-7B shape: 15.8 ms per step instead of 5).
    None (not compiled) or another mode: nothing."""
    if mode is None or not freezes(mode):
        return contextlib.nullcontext()
    from torch._inductor import config

    return config.patch(freezing=True)


#: For the ``+freezing`` modes: each model's weights (storage, version) when a graph froze them.
_FROZEN_AT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tensor_dicts(model: nn.Module) -> tuple:
    """Every module's parameter and buffer dicts (the dicts themselves: a tensor assigned later
    replaces an entry of one of them)."""
    return tuple(d for m in model.modules() for d in (m._parameters, m._buffers) if d)


#: Per model, its modules' tensor dicts: walking the module tree on every call cost more host
#: time than the check itself (``benchmarks/speed/call_overhead.py``).
_DICTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def weights_version(model: nn.Module) -> tuple:
    """Where ``model``'s parameters and buffers live and their in-place version counters:
    changes with any in-place edit (an optimizer step, ``mul_``) or a tensor swapped in.
    (A module added to the model after its first call is not watched.)"""
    dicts = _DICTS.get(model)
    if dicts is None:
        dicts = _DICTS[model] = _tensor_dicts(model)
    return tuple((t.data_ptr(), t._version) for d in dicts for t in d.values()
                 if t is not None)


def refresh_frozen(model: nn.Module) -> bool:
    """Call before each ``+freezing`` call of ``model``. A frozen graph holds the weights as
    constants as they were when it was compiled, and Dynamo reuses it for the same model object
    (by a new wrapper too) whatever the weights hold now: the outputs would silently be the
    old model's. When the weights changed since the last call, every compiled graph of the
    process is dropped (``torch._dynamo.reset()``: each compiled function recompiles at its
    next call), with a warning, and True is returned."""
    now = weights_version(model)
    then = _FROZEN_AT.get(model)
    _FROZEN_AT[model] = now
    if then is None or then == now:
        return False
    warnings.warn("the model's weights changed since a +freezing graph froze them; dropping the "
                  "compiled graphs and recompiling (use a mode without +freezing for a model "
                  "that keeps changing)", stacklevel=3)
    torch._dynamo.reset()
    _FROZEN_AT.clear()
    _FROZEN_AT[model] = now
    return True


def _frozen_call(model: nn.Module, inputs: dict):
    """``model(**inputs)`` under its own code object, for the ``+freezing`` modes: Dynamo keeps
    compiled graphs per code object and backend, and such a mode's backend equals its base
    mode's (freezing is switched on around the call), so compiling ``model`` itself would
    reuse a graph compiled without freezing."""
    return model(**inputs)


class CompiledForward:
    """``model``'s forward compiled with ``torch.compile(dynamic=False)`` in ``mode``.

    Call it like the model (keyword inputs). ``first_call_s`` holds the wall time of the
    first call of each input shape (compilation included, device synchronised), keyed by
    :meth:`shape_key`. ``unpadded``: a batch without padding drops its all-ones
    ``attention_mask`` and runs SDPA with no mask in the graph (a traced all-true mask costs
    mask work, or the float32 math fallback; :mod:`lmprune.evaluation.unpadded`).
    """

    def __init__(self, model: nn.Module, mode: str = "reduce-overhead", unpadded: bool = True):
        self.model, self.mode = model, check_mode(mode)
        self._configs = attention_configs(model) if unpadded else None
        allow_recompiles()
        kwargs = dict(dynamic=False, **compile_kwargs(mode))
        if freezes(mode):  # a code object of its own (see _frozen_call)
            frozen = torch.compile(_frozen_call, **kwargs)
            self._compiled = lambda **inputs: frozen(model, inputs)
        else:
            self._compiled = torch.compile(model, **kwargs)
        self._graphs, self._freezes = uses_graphs(mode), freezes(mode)
        self.first_call_s: dict[tuple, float] = {}

    @staticmethod
    def shape_key(inputs: dict) -> tuple:
        return tuple((name, tuple(value.shape)) for name, value in sorted(inputs.items())
                     if isinstance(value, torch.Tensor))

    def __call__(self, **inputs):
        if self._freezes and refresh_frozen(self.model):
            self.first_call_s.clear()  # recompiled: each shape's next call compiles again
        key = self.shape_key(inputs)  # the caller's inputs, whatever the call drops
        scope = (contextlib.nullcontext(inputs) if self._configs is None
                 else unpadded_sdpa(self.model, inputs, self._configs))
        if self._graphs and hasattr(torch.compiler, "cudagraph_mark_step_begin"):
            torch.compiler.cudagraph_mark_step_begin()  # earlier outputs may be overwritten
        first = key not in self.first_call_s
        start = time.perf_counter()
        with scope as inputs, compile_config(self.mode):
            out = self._compiled(**inputs)
        if first:
            synchronize(next(self.model.parameters()).device)
            self.first_call_s[key] = time.perf_counter() - start
        return out
