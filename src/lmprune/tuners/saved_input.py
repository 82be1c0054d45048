"""An adapter's first product ``x A^T`` that keeps ``x`` for backward in a narrower dtype.

The frozen linear an adapter wraps keeps nothing of its input for backward (its weight gets
no gradient), but the adapter's ``A`` does: ``dL/dA = (dL/du)^T x`` with ``u = x A^T``. So in
a float32 model every adapted projection keeps a float32 copy of its input for the whole
forward and backward pass: at BERT-base shape, batch 32 x 128 tokens, 12.6 MB per layer for
the query/value input and 12.6 MB for the FFN up input, 302 MB in all, at the step's memory
peak. :func:`adapter_product` keeps a ``bfloat16`` copy instead, one per input tensor (the
query and value adapters read the same tensor and share it), and uses it only for ``A``'s
gradient; the gradient passed on to ``x`` uses ``A`` alone and is unchanged. The forward
output is unchanged. ``A``'s gradient is computed from the rounded input (relative error
<= 2^-9 per element of ``x``; TF32 products round to 2^-11), so the run is not bit-identical
to a float32 one, and the error of a large channel that is nearly constant over the tokens
does not average out in the sum over tokens that ``A``'s gradient is.

``apt.saved_input_dtype`` picks it: ``model`` (off, the default: at base scale the plain copy
cost 0.75 points of accuracy, docs/apt.md), ``bfloat16``, ``centred`` (a bfloat16 copy of
``x`` minus its per-channel mean over the tokens, the mean kept apart: a large, nearly
constant channel, as LayerNorm outputs have, then loses nothing to the rounding), or ``auto``
(bfloat16 for a float32/float64 model on a GPU; off on a CPU).

Under autocast (``train.mixed_precision=bf16``) the product is autocast's own, computed from
the input cast to the autocast dtype, so a narrower copy loses nothing more and the setting
does not matter. What autocast does not do is share: each adapter casts ``x`` again and keeps
its own copy (the query and value adapters two of the same input). :func:`adapter_product`
then computes exactly autocast's product and gradients (:class:`_AutocastLinear`) from one
cast copy per input tensor, and from none when ``x`` stays alive to the end of the forward
pass anyway (:func:`inputs_alive_anyway`): it keeps ``x`` itself and casts it again in
backward. At MPNet-base shape, batch 128 x 128 tokens in bf16, the copies were 921 MB of the
step's peak (``benchmarks/apt_base/peak_snapshot.py``).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

# x -> (x's version when copied, its narrow copy): the copy lives as long as x does, so the
# adapters that read one x within a forward pass share one copy.
_COPIES: WeakIdKeyDictionary = WeakIdKeyDictionary()
# tensors that stay alive to the end of the forward pass anyway (inputs_alive_anyway)
_ALIVE: WeakIdKeyDictionary = WeakIdKeyDictionary()


def saved_dtype(setting: str, x: torch.Tensor) -> torch.dtype | None:
    """The dtype ``x`` is kept in for ``A``'s gradient under ``setting``; None: as it is."""
    if setting == "model" or x.dtype not in (torch.float32, torch.float64):
        return None
    if setting == "auto" and x.device.type != "cuda":
        return None
    if torch.is_autocast_enabled(x.device.type):  # autocast already narrows what is kept
        return None
    return torch.bfloat16


@contextlib.contextmanager
def inputs_alive_anyway(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Within: the hidden-state input of each of ``modules`` (e.g. the layers of a forward
    pass with ``output_hidden_states=True``, which returns every layer's input and so keeps it
    alive to the end) is kept as it is by an adapter that reads it: a narrow copy would add
    memory instead of saving it."""
    def mark(module, args, kwargs) -> None:
        x = args[0] if args else kwargs.get("hidden_states")
        if isinstance(x, torch.Tensor):
            _ALIVE[x] = True

    handles = [m.register_forward_pre_hook(mark, with_kwargs=True) for m in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        _ALIVE.clear()


def narrow_copy(x: torch.Tensor, dtype: torch.dtype, centred: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A detached ``dtype`` copy of ``x``, made once per tensor (and per in-place change):
    ``(copy, None)``, or with ``centred`` ``(copy of x - mean, mean)``, the mean over tokens
    per channel kept in ``x``'s dtype (a channel that is large and nearly constant over the
    tokens then loses nothing to the rounding)."""
    hit = _COPIES.get(x)
    if (hit is not None and hit[0] == x._version and hit[1].dtype == dtype
            and (hit[2] is not None) == centred):
        return hit[1], hit[2]
    flat = x.detach()
    mean = flat.reshape(-1, flat.shape[-1]).mean(0) if centred else None
    copy = (flat - mean if centred else flat).to(dtype)
    _COPIES[x] = (x._version, copy, mean)
    return copy, mean


class _NarrowSavedLinear(torch.autograd.Function):
    """``x A^T`` whose backward reads ``x`` from ``kept`` (+ ``mean`` per channel when not
    None): a narrow copy, not differentiated."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, kept: torch.Tensor,
                mean: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(kept, weight, mean)
        return nn.functional.linear(x, weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        kept, weight, mean = ctx.saved_tensors
        grad_x = grad @ weight if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            flat = grad.reshape(-1, grad.shape[-1])
            grad_w = flat.t() @ kept.reshape(-1, kept.shape[-1]).to(flat.dtype)
            if mean is not None:  # sum_t g_t (d_t + mean) = G^T D + (sum_t g_t) mean^T
                grad_w += flat.sum(0)[:, None] * mean.to(flat.dtype)[None, :]
        return grad_x, grad_w, None, None


class _AutocastLinear(torch.autograd.Function):
    """Autocast's ``F.linear(x, W)``: ``x`` and ``W`` cast to ``low``, the product in ``low``,
    the gradients cast back to ``x``'s and ``W``'s dtypes, as autocast's own op and its
    backward compute them; backward reads ``x`` from ``kept`` (``x`` itself, or a copy already
    in ``low``) and casts it again if needed."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, kept: torch.Tensor,
                low: torch.dtype) -> torch.Tensor:
        ctx.save_for_backward(kept, weight)
        ctx.x_dtype = x.dtype
        narrow = kept if kept.dtype == low else x.to(low)
        with torch.autocast(x.device.type, enabled=False):
            return nn.functional.linear(narrow, weight.to(low))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        kept, weight = ctx.saved_tensors
        low = grad.dtype
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ weight.to(low)).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            flat = grad.reshape(-1, grad.shape[-1])
            grad_w = (flat.t() @ kept.reshape(-1, kept.shape[-1]).to(low)).to(weight.dtype)
        return grad_x, grad_w, None, None


def autocasting() -> bool:
    """Whether the code runs under autocast (train.mixed_precision), on either device."""
    return torch.is_autocast_enabled("cuda") or torch.is_autocast_enabled("cpu")


def _autocast_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast would compute ``F.linear(x, weight)`` in when it narrows either
    input; None when autocast is off or changes nothing."""
    kind = x.device.type
    if not torch.is_autocast_enabled(kind):
        return None
    low = torch.get_autocast_dtype(kind)
    if low not in (torch.float16, torch.bfloat16) or (x.dtype == low and weight.dtype == low):
        return None
    return low


def product_of_alive(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x weight^T`` for an ``x`` that stays alive to the loss anyway (a hidden state the
    model returned): under autocast, autocast's product keeping ``x`` itself for ``weight``'s
    gradient instead of a cast copy; otherwise ``F.linear`` with ``x`` in ``weight``'s dtype."""
    low = _autocast_dtype(x, weight) if torch.is_grad_enabled() else None
    if low is not None:
        return _AutocastLinear.apply(x, weight, x, low)
    return nn.functional.linear(x.to(weight.dtype), weight)


def adapter_product(x: torch.Tensor, weight: torch.Tensor, setting: str) -> torch.Tensor:
    """``x weight^T`` (an adapter's ``A`` as ``weight``), keeping ``x`` for ``weight``'s
    gradient as ``setting`` says (:func:`saved_dtype`); under autocast, autocast's product
    from one shared copy of ``x`` (or ``x`` itself when it stays alive anyway), whatever the
    setting. Outside training (no gradient for ``weight``) it is ``F.linear``."""
    training = torch.is_grad_enabled() and weight.requires_grad
    low = _autocast_dtype(x, weight) if training else None
    if low is not None:
        kept = x if (x in _ALIVE or x.dtype == low) else narrow_copy(x, low)[0]
        return _AutocastLinear.apply(x, weight, kept, low)
    dtype = None  # the default setting ("model") returns before any lookup
    if setting != "model" and training and x not in _ALIVE:
        dtype = saved_dtype(setting, x)
    if dtype is None:
        return nn.functional.linear(x, weight)
    kept, mean = narrow_copy(x, dtype, centred=setting == "centred")
    return _NarrowSavedLinear.apply(x, weight, kept, mean)
