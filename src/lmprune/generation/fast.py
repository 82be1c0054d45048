"""The fast generation path: greedy decoding with a static KV cache and a compiled decode step.

Why it is fast. A decoder generates one token per forward; at small batch sizes that forward
is a few hundred tiny kernels, and with transformers' default ``DynamicCache`` and an eager
loop the GPU waits for Python between them (a 135M model ran ~6x faster per token at batch
1 with a static cache and compile, issue #13). Here:

* the KV cache is transformers' stock :class:`~transformers.StaticCache` (fixed shapes,
  fixed addresses), so the decode step has the same shapes at every position;
* the decode step (one forward + greedy argmax) is compiled with
  ``torch.compile(mode="reduce-overhead")``: fused kernels replayed as one CUDA graph; the
  prompt (prefill) runs eagerly, once;
* the loop never waits for the GPU except every ``check_every`` tokens, to stop once every
  sequence has produced its end-of-sequence token.

The tokens are those of ``model.generate(do_sample=False)`` (greedy): the tests check them
token for token on every tiny decoder, pruned ones included. Only decoder-only causal LMs and
prompts of one length (no padding) take this path; anything else raises with what to use.

:class:`Decoder` separates prefill and decode so that :mod:`lmprune.generation.bench` can time
them apart; :func:`fast_generate` is the one-call helper.
"""
from __future__ import annotations

import inspect
import math
import warnings
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from lmprune.errors import LmpruneError
from lmprune.evaluation.compiled import (allow_recompiles, check_mode, compile_config,
                                         compile_kwargs, freezes, refresh_frozen)
from lmprune.generation.filled_attention import unsupported as filled_unsupported
from lmprune.generation.filled_attention import use_filled_attention
from lmprune.structures.kv_cache import cache_arguments

MODES = ("eager", "static", "compile")
#: Decode-step attention: ``sdpa`` (default) is transformers' masked SDPA over every cache
#: slot; ``filled`` reads only the slots that hold keys
#: (:mod:`lmprune.generation.filled_attention`; opt-in: on an H200 at 7B shape level with
#: ``sdpa`` for 32 new tokens, 1.19x faster at batch 16 for 992; BENCHMARKS.md).
ATTENTIONS = ("sdpa", "filled")
#: Static caches are sized in steps of this many tokens, so that prompts of different
#: lengths reuse one compiled decode step (its shapes include the cache length).
CACHE_STEP = 256
#: One static cache per (model, batch, length), reset and reused between calls: a new cache
#: has new addresses, which the compiled step's CUDA graph would have to record again.
_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _accepts(model: nn.Module, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


def static_cache(model: nn.Module, batch: int, length: int):
    """A reset stock StaticCache for ``batch`` sequences of at least ``length`` tokens, reused
    from the previous call with the same model and shape (lengths in steps of CACHE_STEP)."""
    length = math.ceil(length / CACHE_STEP) * CACHE_STEP
    caches = _CACHES.setdefault(model, {})
    cache = caches.get((batch, length))
    if cache is None:
        cache = caches[(batch, length)] = _new_static_cache(model, batch, length)
    else:
        cache.reset()
    return cache


def _new_static_cache(model: nn.Module, batch: int, length: int):
    """A stock StaticCache for ``batch`` sequences of up to ``length`` tokens.

    transformers >= 5 allocates the tensors lazily from the first keys it sees (so layers
    with pruned head counts get their own shapes); older signatures also want the batch size,
    device and dtype, which are passed when the constructor takes them.
    """
    from transformers import StaticCache

    params = inspect.signature(StaticCache.__init__).parameters
    kwargs = {"config": model.config, "max_cache_len": length}
    parameter = next(model.parameters())
    extra = {"max_batch_size": batch, "batch_size": batch, "device": parameter.device,
             "dtype": parameter.dtype}
    kwargs.update({k: v for k, v in extra.items() if k in params})
    return StaticCache(**kwargs)


def _decode_step(model: nn.Module, token: torch.Tensor, position: torch.Tensor,
                 extra: dict) -> torch.Tensor:
    """One greedy step: logits of ``token`` at ``position`` -> the next token [B, 1]."""
    logits = model(input_ids=token, position_ids=position, **extra).logits
    return logits[:, -1].argmax(dim=-1, keepdim=True)


def _frozen_decode_step(model: nn.Module, token: torch.Tensor, position: torch.Tensor,
                        extra: dict) -> torch.Tensor:
    """:func:`_decode_step` under its own code object, for the ``+freezing`` modes: Dynamo
    keeps compiled graphs per code object and backend, and such a mode's backend equals its
    base mode's (freezing is switched on around the call), so a graph compiled without
    freezing would otherwise be reused."""
    return _decode_step(model, token, position, extra)


_compiled_steps: dict[str, object] = {}


def compiled_step(compile_mode: str = "reduce-overhead"):
    """The decode step compiled once per process and mode (torch recompiles it per model and
    shape). ``reduce-overhead`` (default): CUDA graphs; ``max-autotune``: also benchmarks
    GEMM kernels per shape (much longer compilation); ``+freezing`` on either: the weights as
    graph constants, q/k/v and gate/up products concatenated (more weight memory; faster
    decoding at LLaMA-7B shape, BENCHMARKS.md)."""
    step = _compiled_steps.get(check_mode(compile_mode))
    if step is None:
        allow_recompiles()  # one graph per (model, batch size)
        # dynamic=False: every (model, batch size) gets a graph specialised to its shapes,
        # as a served model would; automatic dynamic shapes would make pruned widths symbolic
        fn = _frozen_decode_step if freezes(compile_mode) else _decode_step
        step = _compiled_steps[compile_mode] = torch.compile(
            fn, fullgraph=True, dynamic=False, **compile_kwargs(compile_mode))
    return step


@dataclass
class Prefilled:
    """The state after the prompt: the first generated token, the cache, the next position."""

    token: torch.Tensor  # [B, 1]
    cache: object
    position: int


class Decoder:
    """Greedy decoding of one model in one of :data:`MODES`.

    ``eager``: transformers' DynamicCache, no compilation (what ``generate`` does by default);
    ``static``: a StaticCache, eager steps; ``compile``: a StaticCache and the compiled step
    (``compile_mode``: the torch.compile mode, :data:`lmprune.evaluation.compiled.COMPILE_MODES`).
    ``attention`` (:data:`ATTENTIONS`): how a decode step attends over the static cache;
    ``self.filled`` says whether it reads only the filled slots.
    """

    def __init__(self, model: nn.Module, mode: str = "compile",
                 compile_mode: str = "reduce-overhead", attention: str = "sdpa"):
        if mode not in MODES:
            raise LmpruneError(f"unknown decoding mode {mode!r}; use one of {', '.join(MODES)}")
        if attention not in ATTENTIONS:
            raise LmpruneError(f"unknown decode attention {attention!r}; use one of "
                               f"{', '.join(ATTENTIONS)}")
        _check_decoder(model)
        self.model, self.mode = model.eval(), mode
        self.step = compiled_step(compile_mode) if mode == "compile" else _decode_step
        self._compile_mode = compile_mode if mode == "compile" else None
        self._freezes = self._compile_mode is not None and freezes(self._compile_mode)
        self.filled = _uses_filled(model, mode, attention)
        self._cache_position = _accepts(model, "cache_position")  # transformers < 5.24
        self._logits_to_keep = _accepts(model, "logits_to_keep")

    def _extra(self, cache, start: int, length: int, device) -> dict:
        extra = cache_arguments(self.model, cache)
        if self._cache_position:
            extra["cache_position"] = torch.arange(start, start + length, device=device)
        return extra

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, max_new_tokens: int) -> Prefilled:
        batch, length = input_ids.shape
        cache = None
        if self.mode != "eager":
            cache = static_cache(self.model, batch, length + max_new_tokens)
        extra = self._extra(cache, 0, length, input_ids.device)
        if self._logits_to_keep:
            extra["logits_to_keep"] = 1
        position = torch.arange(length, device=input_ids.device).expand(batch, length)
        out = self.model(input_ids=input_ids, position_ids=position, **extra)
        if cache is None:
            from lmprune.structures.kv_cache import output_cache

            cache = output_cache(out)
        return Prefilled(out.logits[:, -1].argmax(dim=-1, keepdim=True), cache, length)

    @torch.no_grad()
    def decode(self, state: Prefilled, steps: int, eos: set[int] | None = None,
               check_every: int = 16) -> torch.Tensor:
        """``steps`` more tokens after ``state.token``: returns [B, steps + 1] (first included).

        With ``eos``, stops early once every row has produced one (checked every
        ``check_every`` tokens: the only host-device synchronisation of the loop).
        """
        token, device = state.token, state.token.device
        if self._freezes:
            refresh_frozen(self.model)  # weights changed since the graph froze them: recompile
        out = torch.empty(token.shape[0], steps + 1, dtype=token.dtype, device=device)
        out[:, :1] = token
        eos_ids = torch.tensor(sorted(eos), device=device) if eos else None  # copied once
        done = _is_eos(token, eos_ids)
        filled = use_filled_attention(self.model, self.filled)
        with compile_config(self._compile_mode), filled:  # once for the loop, not per step
            for i in range(steps):
                if eos_ids is not None and i % check_every == check_every - 1 \
                        and bool(done.all()):
                    return out[:, :i + 1]
                position = torch.full((token.shape[0], 1), state.position + i, device=device)
                if self.mode == "compile" and hasattr(torch.compiler,
                                                      "cudagraph_mark_step_begin"):
                    torch.compiler.cudagraph_mark_step_begin()
                extra = self._extra(state.cache, state.position + i, 1, device)
                token = self.step(self.model, token, position, extra).clone()
                out[:, i + 1:i + 2] = token
                if eos_ids is not None:
                    done = done | _is_eos(token, eos_ids)
        return out


def _uses_filled(model: nn.Module, mode: str, attention: str) -> bool:
    """Whether the decode steps run :mod:`~lmprune.generation.filled_attention`: asked for,
    with a static cache, on a model it supports (otherwise a warning says why not)."""
    if attention != "filled":
        return False
    reason = ("the eager mode has no static cache" if mode == "eager"
              else filled_unsupported(model))
    if reason:
        warnings.warn(f"decode attention 'filled' is not used ({reason}); decoding with sdpa",
                      stacklevel=3)
        return False
    return True


def _is_eos(token: torch.Tensor, eos: torch.Tensor | None) -> torch.Tensor:
    if eos is None:
        return torch.zeros(token.shape[0], dtype=torch.bool, device=token.device)
    return torch.isin(token[:, 0], eos)


def _check_decoder(model: nn.Module) -> None:
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False) or not hasattr(model, "generate"):
        kind = getattr(config, "model_type", type(model).__name__)
        raise LmpruneError(f"the fast generation path is for decoder-only causal LMs, not "
                           f"{kind}; use model.generate(...)")


def _eos_ids(model: nn.Module, eos_token_id) -> set[int]:
    if eos_token_id is None:
        generation = getattr(model, "generation_config", None)
        eos_token_id = getattr(generation, "eos_token_id", None)
        if eos_token_id is None:
            eos_token_id = getattr(model.config, "eos_token_id", None)
    if eos_token_id is None:
        return set()
    return {int(eos_token_id)} if isinstance(eos_token_id, int) else {int(i) for i in eos_token_id}


def _pad_after_eos(tokens: torch.Tensor, eos: set[int], pad: int) -> torch.Tensor:
    """What ``generate`` returns: tokens after a row's first EOS become ``pad``, and the
    output ends at the step where the last row finished."""
    if not eos:
        return tokens
    is_eos = torch.isin(tokens, torch.tensor(sorted(eos), device=tokens.device))
    finished_before = (is_eos.cumsum(dim=1) - is_eos.long()) > 0  # strictly after the first EOS
    tokens = tokens.masked_fill(finished_before, pad)
    ended = is_eos.any(dim=1)
    if bool(ended.all()):
        last = int(is_eos.long().argmax(dim=1).max())
        tokens = tokens[:, :last + 1]
    return tokens


def fast_generate(model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int = 64, *,
                  compile: bool | str = "auto", static_cache: bool = True,
                  attention_mask: torch.Tensor | None = None, eos_token_id=None,
                  pad_token_id: int | None = None, attention: str = "sdpa") -> torch.Tensor:
    """Greedy generation on the fast path; returns prompt + new tokens like ``generate``.

    ``compile``: ``"auto"`` compiles the decode step on CUDA only (on a CPU the compile costs
    more than it saves for short generations); True or False force it. ``static_cache=False``
    (no compile) is the eager reference. ``input_ids`` [B, L] must be unpadded prompts of
    equal length (``attention_mask``, if given, all ones). ``attention``: the decode steps'
    attention over the static cache (:data:`ATTENTIONS`).
    """
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise LmpruneError(f"input_ids must be [batch, length] with length >= 1, got shape "
                           f"{tuple(input_ids.shape)}")
    if attention_mask is not None and not bool(attention_mask.bool().all()):
        raise LmpruneError("fast_generate takes prompts of equal length without padding; "
                           "generate padded prompts one at a time, or use model.generate(...)")
    if max_new_tokens < 1:
        raise LmpruneError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    device = next(model.parameters()).device
    use_compile = device.type == "cuda" if compile == "auto" else bool(compile)
    if use_compile and not static_cache:
        raise LmpruneError("compile needs the static cache (static_cache=True)")
    mode = "compile" if use_compile else ("static" if static_cache else "eager")
    decoder = Decoder(model, mode, attention=attention)
    eos = _eos_ids(model, eos_token_id)
    state = decoder.prefill(input_ids.to(device), max_new_tokens)
    new = decoder.decode(state, max_new_tokens - 1, eos)
    pad = pad_token_id if pad_token_id is not None else _pad_id(model, eos)
    return torch.cat([input_ids.to(device), _pad_after_eos(new, eos, pad)], dim=1)


def _pad_id(model: nn.Module, eos: set[int]) -> int:
    generation = getattr(model, "generation_config", None)
    pad = getattr(generation, "pad_token_id", None)
    if pad is None:
        pad = getattr(model.config, "pad_token_id", None)
    if pad is None:
        pad = min(eos) if eos else 0
    return int(pad)
