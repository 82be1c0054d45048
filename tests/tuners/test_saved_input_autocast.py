"""An adapter's first product under autocast (train.mixed_precision=bf16): autocast's own
values and gradients, from one cast copy of its input per tensor, or none when the input stays
alive anyway (saved_input.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lmprune.tuners.saved_input import (_ALIVE, adapter_product, inputs_alive_anyway,
                                        product_of_alive)


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, 16, generator=g, requires_grad=True)
    a = torch.randn(4, 16, generator=g, requires_grad=True)
    b = torch.randn(4, 16, generator=g, requires_grad=True)  # a second adapter on x
    up = torch.randn(3, 5, 4, generator=g)
    return x, a, b, up


def _run(product, x, a, b, up):
    """Two products of one x (the query and value adapters of a layer) under CPU bf16
    autocast, backward; the outputs, gradients and bfloat16 tensors saved for backward."""
    x.grad = a.grad = b.grad = None
    saved: dict[int, torch.Tensor] = {}

    def pack(t):
        if t.dtype == torch.bfloat16:
            saved[t.untyped_storage().data_ptr()] = t
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        u, v = product(x, a), product(x, b)
    ((u.float() * up).sum() + (v.float() * up).sum()).backward()
    big = [t for t in saved.values() if t.numel() == x.numel()]  # x's casts (any view)
    return (u, v), (x.grad.clone(), a.grad.clone(), b.grad.clone()), big


def _plain(x, w):
    return nn.functional.linear(x, w)


@pytest.mark.parametrize("setting", ["model", "bfloat16", "centred"])
def test_values_and_gradients_are_autocasts_from_one_shared_copy(setting):
    x, a, b, up = _inputs()
    outs, grads, copies = _run(lambda x_, w: adapter_product(x_, w, setting), x, a, b, up)
    ref_outs, ref_grads, ref_copies = _run(_plain, x, a, b, up)
    for got, want in zip(outs + grads, ref_outs + ref_grads):
        assert got.dtype == want.dtype
        assert torch.equal(got, want)  # bit for bit what autocast computes
    assert len(ref_copies) == 2  # autocast alone: each product keeps its own cast of x
    assert len(copies) == 1  # here: one, shared


def test_an_input_alive_anyway_is_kept_itself_not_copied():
    x, a, b, up = _inputs(1)
    layer = nn.Identity()
    ref_outs, ref_grads, _ = _run(_plain, x, a, b, up)

    def product(x_, w):
        with inputs_alive_anyway([layer]):
            layer(x_)  # the layer hook marks its input as alive
            assert x_ in _ALIVE
            return adapter_product(x_, w, "model")
    outs, grads, copies = _run(product, x, a, b, up)
    assert copies == []
    for got, want in zip(outs + grads, ref_outs + ref_grads):
        assert torch.equal(got, want)


def test_product_of_alive_keeps_the_returned_state_and_matches_autocast():
    x, a, b, up = _inputs(2)
    outs, grads, copies = _run(product_of_alive, x, a, b, up)
    ref_outs, ref_grads, _ = _run(_plain, x, a, b, up)
    assert copies == []
    for got, want in zip(outs + grads, ref_outs + ref_grads):
        assert torch.equal(got, want)
    # without autocast: F.linear in the weight's dtype, exactly
    y = product_of_alive(x.detach().double(), a.detach().double())
    assert y.dtype == torch.float64
    assert torch.equal(y, x.detach().double() @ a.detach().double().T)
