"""Frozen weights stored in 16 bits and computed in the model's precision.

A method that tunes adapters (APT, LoRA) never updates the backbone's linear and embedding
weights, yet a float32 model keeps them in float32: at MPNet-base size 438 MB of the run's
memory, every step. :func:`store_frozen` keeps each *frozen* ``nn.Linear`` and
``nn.Embedding`` weight in ``float16`` (or ``bfloat16``) instead and casts it back to the
model's dtype where it is used, one layer at a time:

* a linear computes ``F.linear(x, W.to(x.dtype), b)``; for backward it keeps the 16-bit
  weight (not a float32 copy) and casts it again to pass the gradient on to ``x``; the weight
  gets no gradient, so the input is not kept;
* an embedding looks up the 16-bit table and casts the rows it returns.

What changes: each weight is rounded once. ``float16`` keeps 11 significant bits, as many as
a TF32 matrix product (PyTorch's ``allow_tf32``, which lmprune's benchmarks turn on) rounds its
inputs to anyway, so on a GPU running TF32 the products are those of the float32 model up to
where the two roundings fall; weights smaller than 2^-14 (float16's subnormals) keep an
absolute error below 2^-25. ``bfloat16`` keeps 8 bits (its range is float32's). A weight
that does not fit float16's range (``|w| > 65504``) is left as it is. Biases, norms and
every trainable parameter are left as they are.

Under bfloat16 autocast (``train.mixed_precision=bf16``) every frozen linear is computed in
bfloat16 anyway: autocast casts its float32 weight to bfloat16 at each call and keeps that
cast for backward, so a float32 backbone costs its float32 weights *and* a bfloat16 copy of
each. ``apt.frozen_dtype=autocast`` (the default) then stores the linears in bfloat16: the
same rounding autocast applies, once, so the forward and backward compute exactly what they
computed from float32 weights, the linears take half the memory and the casts go (170 MB
each at MPNet-base size). Embeddings, which autocast leaves in float32, stay as they are.
What reads a weight outside autocast's products sees the rounded value: APT's salience, the
evaluations during training, and the exported model (its linears are the bfloat16 values, in
the model's dtype). Without autocast the setting keeps the model's dtype.

The modules keep their class's behaviour through a subclass (:class:`StoredLinear`,
:class:`StoredEmbedding`; ``isinstance(m, nn.Linear)`` still holds), so slicing, counting and
hooks see ordinary modules. :func:`restore_frozen` turns them back into plain modules in the
dtype asked for (the model's, before merging adapters and exporting).
"""
from __future__ import annotations

import torch
from torch import nn

from lmprune.errors import LmpruneError

STORAGE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
_FP16_MAX = torch.finfo(torch.float16).max


def storage_dtype(setting: str, model_dtype: torch.dtype, device: torch.device,
                  autocast: torch.dtype | None = None) -> torch.dtype | None:
    """The dtype frozen weights are stored in under ``setting`` (``apt.frozen_dtype``); None:
    as they are. ``auto``: float16 for a float32/float64 model on a GPU, none on a CPU;
    ``autocast``: ``autocast`` (the dtype training's autocast computes in, None when
    training runs without it) for a float32/float64 model."""
    if setting == "model" or model_dtype not in (torch.float32, torch.float64):
        return None
    if setting == "autocast":
        return autocast
    if setting == "auto":
        return torch.float16 if device.type == "cuda" else None
    if setting not in STORAGE_DTYPES:
        raise LmpruneError(f"frozen weight storage {setting!r}: use autocast, auto, model, "
                           f"{', '.join(STORAGE_DTYPES)}")
    return STORAGE_DTYPES[setting]


def store_as_set(model: nn.Module, setting: str, model_dtype: torch.dtype,
                 device: torch.device, autocast: torch.dtype | None = None
                 ) -> tuple[torch.dtype | None, int]:
    """Store ``model``'s frozen weights as ``apt.frozen_dtype`` ``setting`` says
    (:func:`storage_dtype`; ``autocast`` stores linears only, as autocast leaves embeddings
    in float32): ``(the storage dtype or None, bytes saved)``."""
    dtype = storage_dtype(setting, model_dtype, device, autocast)
    return dtype, store_frozen(model, dtype, embeddings=setting != "autocast")


class _StoredWeightLinear(torch.autograd.Function):
    """``F.linear(x, W.to(x.dtype), b)`` that keeps ``W`` as stored for backward; ``W`` and
    ``b`` are frozen (no gradient)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
                ) -> torch.Tensor:
        ctx.save_for_backward(weight)
        return nn.functional.linear(x, weight.to(x.dtype), bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (weight,) = ctx.saved_tensors
        return grad @ weight.to(grad.dtype), None, None


class StoredLinear(nn.Linear):
    """An ``nn.Linear`` whose frozen weight is stored in another dtype than its input's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.requires_grad or (self.bias is not None and self.bias.requires_grad):
            raise LmpruneError("a linear with a 16-bit stored weight must stay frozen; "
                               "restore_frozen() it before training its weight")
        if self.weight.dtype == x.dtype:
            return nn.functional.linear(x, self.weight, self.bias)
        if torch.is_grad_enabled() and x.requires_grad:
            return _StoredWeightLinear.apply(x, self.weight, self.bias)
        return nn.functional.linear(x, self.weight.to(x.dtype), self.bias)


class StoredEmbedding(nn.Embedding):
    """An ``nn.Embedding`` whose frozen table is stored in 16 bits; rows come out in
    ``compute_dtype`` (the model's dtype when it was stored)."""

    compute_dtype: torch.dtype = torch.float32

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids).to(self.compute_dtype)


_STORED = {nn.Linear: StoredLinear, nn.Embedding: StoredEmbedding}
_PLAIN = {v: k for k, v in _STORED.items()}


def _frozen(module: nn.Module) -> bool:
    return all(not p.requires_grad for p in module.parameters(recurse=False))


def _fits(weight: torch.Tensor, dtype: torch.dtype) -> bool:
    return dtype != torch.float16 or bool(weight.detach().abs().max() <= _FP16_MAX)


@torch.no_grad()
def store_frozen(model: nn.Module, dtype: torch.dtype | None, embeddings: bool = True) -> int:
    """Store every frozen plain ``nn.Linear`` / ``nn.Embedding`` weight of ``model`` in
    ``dtype`` (in place; None: nothing; ``embeddings=False``: linears only). Returns the
    number of bytes saved. A weight shared by two modules (tied embeddings) is converted
    once; a weight that requires grad, does not fit float16, or sits in a module the model
    class keeps in float32 (``_keep_in_fp32_modules``: T5's ``wo``, whose input the stock
    code casts to its weight's dtype) is left alone."""
    if dtype is None:
        return 0
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    saved, done = 0, {}
    for name, module in model.named_modules():
        stored = _STORED.get(type(module))
        if stored is StoredEmbedding and not embeddings:
            continue
        if stored is None or not _frozen(module) or keep & set(name.split(".")):
            continue
        weight = module.weight
        if id(weight) not in done:  # a tied weight is converted once, its modules each
            if weight.dtype not in (torch.float32, torch.float64) or not _fits(weight, dtype):
                continue
            before, done[id(weight)] = weight.nbytes, weight.dtype
            weight.data = weight.data.to(dtype)
            saved += before - weight.nbytes
        module.__class__ = stored
        if stored is StoredEmbedding:
            module.compute_dtype = done[id(weight)]
    return saved


@torch.no_grad()
def restore_frozen(model: nn.Module, dtype: torch.dtype) -> int:
    """Make every :class:`StoredLinear` / :class:`StoredEmbedding` of ``model`` a plain module
    again with its weight in ``dtype`` (in place). Returns the number of modules restored."""
    count, done = 0, set()
    for module in model.modules():
        plain = _PLAIN.get(type(module))
        if plain is None:
            continue
        if id(module.weight) not in done:
            module.weight.data = module.weight.data.to(dtype)
            done.add(id(module.weight))
        if isinstance(module, StoredEmbedding):
            del module.compute_dtype
        module.__class__ = plain
        count += 1
    return count


def stored_modules(model: nn.Module) -> dict[str, nn.Module]:
    """``{path: module}`` of the modules whose weight :func:`store_frozen` converted."""
    return {n: m for n, m in model.named_modules() if type(m) in _PLAIN}
