"""training/apt_parts.py: adapter importance sum |B * dL/dB|, read back at once."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lmprune.training.apt_parts import _l1_of_products, adapter_importance
from lmprune.tuners.apt_adapter import APTLinear


def test_importance_is_the_l1_of_b_times_its_gradient_by_hand():
    torch.manual_seed(0)
    adapters = {f"a{i}": APTLinear(nn.Linear(4, 3), r=2) for i in range(3)}
    for i, a in enumerate(adapters.values()):
        with torch.no_grad():
            a.lora_B.copy_(torch.arange(6.0).reshape(3, 2) - i)
        if i != 1:  # a1 got no gradient this step
            a.lora_B.grad = torch.full((3, 2), -0.5)
    got = adapter_importance(adapters)
    # a0: 0.5 * (0+1+2+3+4+5) = 7.5; a2: 0.5 * (2+1+0+1+2+3) = 4.5
    assert got == {"a0": 7.5, "a1": 0.0, "a2": 4.5}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_fused_and_per_pair_paths_agree(dtype):
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(7, k, generator=g).to(dtype) for k in (1, 3, 5)]
    ys = [torch.randn(7, k, generator=g).to(dtype) for k in (1, 3, 5)]
    expected = [(x.double() * y.double()).abs().sum().item() for x, y in zip(xs, ys)]
    got = _l1_of_products(xs, ys)
    assert len(got) == 3 and all(isinstance(v, float) for v in got)
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    assert got == pytest.approx(expected, rel=tol)
    assert _l1_of_products([], []) == []
