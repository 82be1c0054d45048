"""The adapter's first product keeping its input for backward in bfloat16 (saved_input.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lmprune.config.train_schema import APTConfig
from lmprune.tuners import apply_apt
from lmprune.tuners.apt_adapter import APTLinear, apt_modules
from lmprune.tuners.saved_input import _COPIES, adapter_product, saved_dtype
from lmprune.zoo import build_tiny


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, 16, generator=g, requires_grad=True)
    a = torch.randn(4, 16, generator=g, requires_grad=True)
    up = torch.randn(3, 5, 4, generator=g)  # upstream gradient of x A^T
    return x, a, up


def _grads(x, a, up, setting):
    x.grad = a.grad = None
    out = adapter_product(x, a, setting)
    out.backward(up)
    return out.detach(), x.grad.clone(), a.grad.clone()


def test_bfloat16_keeps_a_rounded_input_for_a_gradient_only():
    x, a, up = _inputs()
    out, gx, ga = _grads(x, a, up, "bfloat16")
    ref_out, ref_gx, ref_ga = _grads(x, a, up, "model")
    assert torch.equal(out, ref_out)  # forward untouched
    torch.testing.assert_close(gx, ref_gx, rtol=0, atol=1e-6)  # dL/dx = up A: no rounding
    # dL/dA = up^T x, by hand with x rounded to bfloat16
    rounded = x.detach().bfloat16().float()
    by_hand = up.reshape(-1, 4).t() @ rounded.reshape(-1, 16)
    torch.testing.assert_close(ga, by_hand, rtol=1e-6, atol=1e-5)
    assert not torch.allclose(ga, ref_ga, rtol=0, atol=1e-6)  # the rounding is really used
    torch.testing.assert_close(ga, ref_ga, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("setting", ["model", "auto"])
def test_model_and_auto_on_a_cpu_keep_the_input_as_it_is(setting):
    x, a, up = _inputs(1)
    _, gx, ga = _grads(x, a, up, setting)
    x2, a2 = x.detach().clone().requires_grad_(), a.detach().clone().requires_grad_()
    nn.functional.linear(x2, a2).backward(up)
    assert torch.equal(ga, a2.grad) and torch.equal(gx, x2.grad)


def test_saved_dtype_table():
    f32, bf16 = torch.zeros(2), torch.zeros(2, dtype=torch.bfloat16)
    assert saved_dtype("model", f32) is None
    assert saved_dtype("auto", f32) is None  # a CPU tensor
    assert saved_dtype("bfloat16", f32) is torch.bfloat16
    assert saved_dtype("bfloat16", torch.zeros(2, dtype=torch.float64)) is torch.bfloat16
    assert saved_dtype("bfloat16", bf16) is None  # already narrow
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert saved_dtype("bfloat16", f32) is None  # autocast narrows already


def _saved_bytes(fn, modules) -> tuple[int, torch.Tensor]:
    """Bytes autograd keeps for backward while ``fn()`` runs, once per storage, the storages
    of ``modules``' parameters left out."""
    params = {p.untyped_storage().data_ptr() for m in modules for p in m.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out


def test_adapters_reading_one_input_share_one_narrow_copy():
    torch.manual_seed(0)
    q, v = APTLinear(nn.Linear(16, 16)), APTLinear(nn.Linear(16, 16))
    x = torch.randn(8, 16, requires_grad=True)
    both = lambda: q(x) + v(x)  # noqa: E731
    wide, _ = _saved_bytes(both, (q, v))
    q.saved_input = v.saved_input = "bfloat16"
    narrow, out = _saved_bytes(both, (q, v))
    # float32: x once (shared by the two adapters' A products) and each u = x A^T;
    # bfloat16: one half-size copy of x for both, the same u's
    assert wide == 8 * 16 * 4 + 2 * 8 * 8 * 4
    assert narrow == 8 * 16 * 2 + 2 * 8 * 8 * 4
    out.sum().backward()
    assert q.lora_A.grad is not None and v.lora_A.grad is not None


def test_an_input_changed_in_place_gets_a_new_copy():
    a = torch.randn(4, 16, requires_grad=True)
    x = torch.randn(8, 16)
    first = adapter_product(x, a, "bfloat16")
    copy1 = _COPIES[x][1]
    x.mul_(2)
    second = adapter_product(x, a, "bfloat16")
    assert _COPIES[x][1] is not copy1
    (first.sum() + second.sum()).backward()
    by_hand = torch.ones(8, 4).t() @ ((x / 2).bfloat16().float() + x.bfloat16().float())
    torch.testing.assert_close(a.grad, by_hand, rtol=1e-5, atol=1e-4)


def test_no_copy_without_a_gradient():
    a = torch.randn(4, 16, requires_grad=True)
    x = torch.randn(8, 16)
    with torch.no_grad():
        adapter_product(x, a, "bfloat16")
    adapter_product(x, a.detach(), "bfloat16")
    assert x not in _COPIES


def test_apt_method_sets_the_switch_and_a_model_trains_the_same_way():
    from lmprune.training.apt import APTMethod

    torch.manual_seed(0)
    ids = torch.randint(5, 90, (4, 12))
    grads = {}
    for setting in ("model", "bfloat16"):
        net = build_tiny("tiny-bert", seed=0)
        method = APTMethod(APTConfig(saved_input_dtype=setting), keep=0.5, total_steps=4,
                           steps_per_epoch=2)
        net = method.setup(net)
        adapters = apt_modules(net)
        assert adapters and all(m.saved_input == setting for m in adapters.values())
        net.train()
        torch.manual_seed(1)  # the same dropout draws in both runs
        net(input_ids=ids, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
        grads[setting] = {n: p.grad.clone() for n, p in net.named_parameters()
                          if p.grad is not None}
    assert grads["model"].keys() == grads["bfloat16"].keys()
    for name, g in grads["model"].items():
        other = grads["bfloat16"][name]
        if name.endswith("lora_A"):
            torch.testing.assert_close(other, g, rtol=3e-2, atol=1e-4 * g.abs().max().item())
        else:  # B and the head see the exact forward; only A's gradient reads the copy
            torch.testing.assert_close(other, g, rtol=1e-4, atol=1e-6)


def test_layer_inputs_alive_anyway_are_kept_as_they_are():
    """With output_hidden_states every layer input is returned, so it is alive to the end of
    the forward pass: the q/v adapters keep it as it is; the FFN up input gets its copy."""
    from lmprune.arch import describe
    from lmprune.training.apt_parts import layer_modules
    from lmprune.tuners.saved_input import inputs_alive_anyway

    net = build_tiny("tiny-bert", seed=0)
    apply_apt(net, ["q", "v", "ffn_up"])
    for m in apt_modules(net).values():
        m.saved_input = "bfloat16"
    layers = layer_modules(net, describe(net))
    ids = torch.randint(5, 90, (2, 12))

    def narrow_copies(context) -> int:
        kinds: dict[int, torch.dtype] = {}

        def pack(t):
            kinds[t.untyped_storage().data_ptr()] = t.dtype
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), context:
            net(input_ids=ids, output_hidden_states=True)
        return sum(dtype == torch.bfloat16 for dtype in kinds.values())

    import contextlib
    assert narrow_copies(contextlib.nullcontext()) == 2 * len(layers)  # q/v shared, ffn up
    assert narrow_copies(inputs_alive_anyway(layers)) == len(layers)  # ffn up only
    assert len(layers) == net.config.num_hidden_layers


def test_centred_keeps_the_channel_means_apart():
    """``centred``: A's gradient from round(x - mean) + mean, by hand; on a channel that is
    large and nearly constant over the tokens (as LayerNorm outputs have) it is far closer
    to the exact gradient than the plain bfloat16 copy."""
    x, a, up = _inputs(2)
    with torch.no_grad():
        x[..., 3] += 40.0  # a large, nearly constant channel
    _, gx, ga = _grads(x, a, up, "centred")
    _, ref_gx, exact = _grads(x, a, up, "model")
    _, _, plain = _grads(x, a, up, "bfloat16")
    flat = x.detach().reshape(-1, 16)
    mean = flat.mean(0)
    by_hand = up.reshape(-1, 4).t() @ ((flat - mean).bfloat16().float() + mean)
    torch.testing.assert_close(ga, by_hand, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gx, ref_gx, rtol=0, atol=1e-6)
    err_centred = (ga[:, 3] - exact[:, 3]).abs().max()
    err_plain = (plain[:, 3] - exact[:, 3]).abs().max()
    assert err_centred < err_plain / 10
    assert saved_dtype("centred", torch.zeros(2)) is torch.bfloat16
