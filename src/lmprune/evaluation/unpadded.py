"""Fused attention for unpadded batches of a compiled bidirectional model.

transformers builds no attention mask for an encoder batch without padding, so PyTorch's
scaled-dot-product attention (SDPA) runs a fused kernel (cuDNN / Flash) without mask work.
Under ``torch.compile`` transformers cannot look at the mask's values, so it materialises an
all-true boolean mask: always when an ``attention_mask`` is passed, and in transformers 5.17
even when none is (5.24 skips that case). Measured on an H200 (RoBERTa-base, batch 128 x 128,
``benchmarks/speed/encoder_attention.py``): with ``input_ids`` alone the materialised mask sent
SDPA to its float32 math fallback (FFMA matrix products, float32 softmax): compiled 10.2 ms
against 8.1 ms eager; with an all-ones ``attention_mask`` cuDNN ran with the mask: 7.3 ms
(8.9 ms with ``+freezing``) against 7.2 / 7.5 ms with no mask.

:func:`unpadded_sdpa` decides outside the graph: when the caller's ``attention_mask`` is absent
or all ones and the model uses ``sdpa``, the mask is dropped and the model runs under the
attention implementation ``lmprune_sdpa`` for the call: transformers' own SDPA attention with a
mask function that returns no mask where transformers would skip it uncompiled (bidirectional
masks without padding); every other mask (causal masks, padding) is transformers' ``sdpa_mask``.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

NAME = "lmprune_sdpa"
_registered: set[str] = set()


def _mask(*args, **kwargs):
    """transformers' ``sdpa_mask``, except None for a bidirectional mask without padding
    (what transformers returns uncompiled: the skip it cannot prove under tracing)."""
    from transformers.masking_utils import sdpa_mask

    local = kwargs.get("local_size")
    if (not args and kwargs.get("allow_is_bidirectional_skip")
            and kwargs.get("attention_mask") is None
            and (local is None or kwargs.get("kv_length", 0) < local)):
        return None
    return sdpa_mask(*args, **kwargs)


def register_attention(name: str, forward, mask) -> str:
    """Register an attention implementation ``name`` with transformers' attention interface
    (``forward``) and mask interface (``mask``), once per process; returns ``name``."""
    if name not in _registered:
        from transformers.masking_utils import AttentionMaskInterface
        from transformers.modeling_utils import AttentionInterface

        AttentionInterface.register(name, forward)
        AttentionMaskInterface.register(name, mask)
        _registered.add(name)
    return name


def register() -> str:
    """Register ``lmprune_sdpa`` with transformers' attention and mask interfaces (once)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return register_attention(NAME, sdpa_attention_forward, _mask)


def attention_configs(model: nn.Module) -> list:
    """Every distinct config object the model's modules read."""
    seen: dict[int, object] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            seen.setdefault(id(config), config)
    return list(seen.values())


def drop_all_ones_mask(inputs: dict) -> dict:
    """``inputs`` without an ``attention_mask`` that masks nothing (all ones). Checking a mask
    on a GPU synchronises the device once per call: pass none for a batch without padding."""
    mask = inputs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2 and bool(mask.all()):
        return {k: v for k, v in inputs.items() if k != "attention_mask"}
    return inputs


@contextlib.contextmanager
def unpadded_sdpa(model: nn.Module, inputs: dict, configs: list | None = None):
    """Yield the inputs to call ``model`` with: for an ``sdpa`` model and a batch without
    padding, without its all-ones mask and with ``lmprune_sdpa`` set for the call (restored
    after); otherwise unchanged. ``configs``: :func:`attention_configs` of ``model``, when the
    caller keeps them (found again otherwise)."""
    configs = attention_configs(model) if configs is None else configs
    if not configs or any(c._attn_implementation != "sdpa" for c in configs):
        yield inputs
        return
    inputs = drop_all_ones_mask(inputs)
    if "attention_mask" in inputs:
        yield inputs
        return
    register()
    for config in configs:
        config._attn_implementation = NAME
    try:
        yield inputs
    finally:
        for config in configs:
            config._attn_implementation = "sdpa"
