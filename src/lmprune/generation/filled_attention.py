"""Decode-step attention that reads only the filled part of a static KV cache.

The fast path's :class:`~transformers.StaticCache` has more slots than a generation fills
(its length is rounded up, ``fast.CACHE_STEP``, so prompts of different lengths share one
compiled step), and transformers hands scaled-dot-product attention a boolean mask over every
slot: the kernel reads all the keys and values, masked or not. Measured on an H200 at
LLaMA-7B shape, batch 16, 144 of 256 slots filled (``benchmarks/speed/decode_attention.py``):
28.1 us per layer masked against 14.4 us for a kernel that reads the 144 filled slots only.

``filled`` (the attention implementation :data:`NAME`) keeps the shapes static, as a CUDA graph
needs, and still skips the empty slots: at a decode step (one query per sequence) it runs
FlexAttention with a block mask built from the position being decoded — ``pos // block + 1``
blocks of ``block`` slots, and inside the last one the slots after ``pos`` masked — so the
kernel visits only the blocks that hold keys. No boolean mask is built for those steps.
Anything else (the prompt, several queries) is transformers' SDPA attention with its mask.

It applies where every sequence of the batch is at the same position without padding, which
is what :class:`~lmprune.generation.fast.Decoder` decodes; :func:`use_filled_attention` sets
it for the decode loop of an ``sdpa`` model and restores the model after. Opt-in
(``Decoder(..., attention="filled")``, ``lmprune generate/bench --decode-attention filled``):
compiled with CUDA graphs on an H200 (torch 2.11) it gave ``generate``'s greedy tokens
(float32, grouped and plain heads, 64- and 128-slot blocks). In a whole 7B-shape step there
it cut the attention kernels at batch 16 from 0.86 to 0.59 ms but the step only from 5.11 to
5.07 ms for 32 new tokens (the kernels around it and idle gaps took the rest back), and batch
1 was 2% slower; for 992 new tokens at batch 16 (a 1,280-slot cache) a step took 5.73 ms
against 6.79 (BENCHMARKS.md). Hence an option for long generations, not the default. A query
block of 1 found no kernel under inductor there (``NoValidChoicesError``), hence
:data:`Q_BLOCK`.
"""
from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from lmprune.errors import LmpruneError

NAME = "lmprune_filled"
#: Slots per FlexAttention key/value block: the granularity at which empty slots are skipped.
BLOCK = 64
#: FlexAttention's query block: one block holds the single decode query (see the docstring).
Q_BLOCK = 128
#: Model types whose attention is plain causal attention through transformers' attention
#: interface (the decoders lmprune prunes, ``lmprune.arch.tables``); a sliding window is
#: honoured, anything else the interface may pass (soft-capping, sinks) is refused.
MODEL_TYPES = ("llama", "mistral", "qwen2")
_UNHANDLED = ("softcap", "s_aux", "sinks")


def _position(kwargs: dict) -> torch.Tensor | None:
    """The decoded position per sequence, [B] or [1]: ``position_ids`` (every transformers 5
    version passes them down to the attention function), else ``cache_position``."""
    position = kwargs.get("position_ids")
    if position is not None:
        return position[:, -1]
    position = kwargs.get("cache_position")
    return None if position is None else position[-1:]


def block_mask(position: torch.Tensor, batch: int, kv_length: int, block: int | None = None,
               window: int | None = None):
    """A FlexAttention block mask for one query per sequence at ``position`` ([B] or [1]):
    the blocks up to the one holding ``position``, and slots ``<= position`` inside them
    (and ``> position - window`` with a sliding ``window``, as transformers masks it)."""
    from torch.nn.attention.flex_attention import BlockMask

    block = block or BLOCK
    blocks = -(-kv_length // block)
    position = position.expand(batch)
    used = torch.clamp(position // block + 1, max=blocks).to(torch.int32).view(batch, 1, 1)
    indices = torch.arange(blocks, device=position.device, dtype=torch.int32)
    indices = indices.view(1, 1, 1, blocks).expand(batch, 1, 1, blocks).contiguous()

    def keep(b, h, q_idx, kv_idx):
        return kv_idx <= position[b]

    def keep_window(b, h, q_idx, kv_idx):
        return (kv_idx <= position[b]) & (kv_idx > position[b] - window)

    return BlockMask.from_kv_blocks(used, indices, BLOCK_SIZE=(Q_BLOCK, block),
                                    mask_mod=keep if window is None else keep_window,
                                    seq_lengths=(1, kv_length), compute_q_blocks=False)


def filled_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor,
                     value: torch.Tensor, attention_mask, scaling: float | None = None,
                     dropout: float = 0.0, **kwargs):
    """transformers' attention-function signature; returns ([B, L, H, D] output, None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    unhandled = [k for k in _UNHANDLED if kwargs.get(k) is not None]
    if unhandled:
        raise LmpruneError(f"the filled decode attention does not implement "
                           f"{', '.join(unhandled)}; decode with attention='sdpa'")
    if query.shape[2] != 1:  # the prompt: transformers' mask was built for it
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      scaling=scaling, dropout=dropout, **kwargs)
    position = _position(kwargs)
    if position is None or dropout:  # no mask was built for a decode step: never run without
        raise LmpruneError("the filled decode attention needs the decoded position "
                           "(position_ids) and no dropout; decode with attention='sdpa'")
    from torch.nn.attention.flex_attention import flex_attention

    mask = block_mask(position, query.shape[0], key.shape[2],
                      window=kwargs.get("sliding_window"))
    gqa = query.shape[1] != key.shape[1]
    if torch.compiler.is_compiling():
        out = flex_attention(query, key, value, block_mask=mask, scale=scaling, enable_gqa=gqa)
    else:  # eager (the static mode, tests): flex's unfused reference, whose warning says so
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="flex_attention called without")
            out = flex_attention(query, key, value, block_mask=mask, scale=scaling,
                                 enable_gqa=gqa)
    return out.transpose(1, 2).contiguous(), None


def _mask(*args, **kwargs):
    """No mask for one query per sequence (:func:`filled_attention` builds its own), else
    transformers' ``sdpa_mask``."""
    from transformers.masking_utils import sdpa_mask

    if not args and kwargs.get("q_length") == 1:
        return None
    return sdpa_mask(*args, **kwargs)


def register() -> str:
    """Register :data:`NAME` with transformers' attention and mask interfaces (once)."""
    from lmprune.evaluation.unpadded import register_attention

    return register_attention(NAME, filled_attention, _mask)


def unsupported(model: nn.Module) -> str | None:
    """Why the model cannot decode with :data:`NAME` (None when it can): its attention must
    be transformers' SDPA everywhere (the only one replaced), its type one of
    :data:`MODEL_TYPES`, and this torch must have FlexAttention's block masks."""
    from lmprune.evaluation.unpadded import attention_configs

    try:
        from torch.nn.attention.flex_attention import BlockMask  # noqa: F401
    except ImportError:
        return f"torch {torch.__version__} has no FlexAttention block masks"
    configs = attention_configs(model)
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in MODEL_TYPES:
        return f"model type {kind!r} is not one of {', '.join(MODEL_TYPES)}"
    others = sorted({c._attn_implementation for c in configs} - {"sdpa"})
    if not configs or others:
        return f"its attention is {', '.join(others) or 'unknown'}, not sdpa"
    return None


@contextlib.contextmanager
def use_filled_attention(model: nn.Module, enabled: bool = True):
    """Run the block with :data:`NAME` as the attention of an ``sdpa`` model (restored after);
    a model with another attention, or ``enabled=False``, is left as it is."""
    from lmprune.evaluation.unpadded import attention_configs

    if not enabled or unsupported(model):
        yield False
        return
    register()
    configs = attention_configs(model)
    for config in configs:
        config._attn_implementation = NAME
    try:
        yield True
    finally:
        for config in configs:
            config._attn_implementation = "sdpa"
