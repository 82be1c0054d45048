"""APT adapter (Zhao et al., ICML 2024, Eq. 2): forward, rank growth, merge, model wrapping."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lmprune.arch import describe
from lmprune.errors import LmpruneError
from lmprune.tuners import (
    APTLinear,
    adapter_parameter_count,
    apply_apt,
    apt_modules,
    merge_apt,
    trainable_parameters,
)
from lmprune.zoo import build_tiny


def _linear(d_in=6, d_out=4, seed=0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(d_in, d_out)


def _randomize_b(adapter: APTLinear, seed=1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        adapter.lora_B.copy_(torch.randn(adapter.lora_B.shape, generator=g))


def _inputs(name: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 128, (2, 7), generator=g)
    if "t5" in name:
        return {"input_ids": ids, "decoder_input_ids": torch.randint(3, 128, (2, 5), generator=g)}
    return {"input_ids": ids}


def _logits(model, name):
    with torch.no_grad():
        return model(**_inputs(name)).logits


# --- the adapter on one linear -----------------------------------------------------------

def test_forward_matches_hand_computed_eq2():
    base = nn.Linear(2, 2)
    with torch.no_grad():
        base.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        base.bias.copy_(torch.tensor([0.5, -0.5]))
    a = APTLinear(base, r=1, alpha=2.0)  # s = 2
    with torch.no_grad():
        a.lora_A.copy_(torch.tensor([[1.0, -1.0]]))
        a.lora_B.copy_(torch.tensor([[1.0], [2.0]]))
    a.set_masks(in_mask=torch.tensor([1.0, 0.0]), out_mask=torch.tensor([0.0, 1.0]))
    x = torch.tensor([[2.0, 5.0]])
    # x*m_i = [2, 0]; W x + b = [2.5, 5.5]; s B A x = 2 * [2, 4] = [4, 8]; sum [6.5, 13.5];
    # times m_o = [0, 13.5].
    assert torch.equal(a(x), torch.tensor([[0.0, 13.5]]))


def test_init_is_identity_and_scale():
    base = _linear()
    a = APTLinear(base)
    assert a.rank == 8 and a.scaling == 2.0
    assert torch.equal(a.lora_B, torch.zeros(4, 8)) and a.lora_A.abs().sum() > 0
    x = torch.randn(3, 6)
    assert torch.equal(a(x), base(x))
    assert not base.weight.requires_grad and not base.bias.requires_grad
    assert a.weight is base.weight and a.bias is base.bias
    assert (a.in_features, a.out_features) == (6, 4)


def test_grow_rank_keeps_output_scale_and_values():
    a = APTLinear(_linear(), r=8, alpha=16)
    _randomize_b(a)
    x = torch.randn(5, 6)
    before, old_a, old_b = a(x).detach(), a.lora_A.detach().clone(), a.lora_B.detach().clone()
    count = adapter_parameter_count(a)
    params = a.grow_rank(12, generator=torch.Generator().manual_seed(3))
    assert params[0] is a.lora_A and params[1] is a.lora_B
    assert a.rank == 12 and a.scaling == 2.0  # alpha / r_init, not alpha / 12
    assert adapter_parameter_count(a) - count == (6 + 4) * 4
    assert (a(x) - before).abs().max() <= 1e-6
    assert torch.equal(a.lora_A[:8], old_a) and torch.equal(a.lora_B[:, :8], old_b)
    assert torch.equal(a.lora_B[:, 8:], torch.zeros(4, 4)) and a.lora_A[8:].abs().sum() > 0
    assert a.lora_A.requires_grad and a.lora_B.requires_grad


def test_grow_rank_rejects_shrinking():
    a = APTLinear(_linear(), r=8)
    with pytest.raises(LmpruneError, match="cannot grow"):
        a.grow_rank(4)
    with pytest.raises(LmpruneError, match="positive integer"):
        APTLinear(_linear(), r=0)


def test_merge_equals_unmerged_with_masks():
    a = APTLinear(_linear(8, 6), r=4, alpha=16)
    _randomize_b(a)
    g = torch.Generator().manual_seed(5)
    m_i = (torch.rand(8, generator=g) > 0.5).float()
    m_o = (torch.rand(3, generator=g) > 0.4).float()  # 3 "heads" of head_dim 2
    a.set_masks(m_i, m_o, out_group=2)
    merged = a.merge()
    assert type(merged) is nn.Linear and not merged.weight.requires_grad
    x = torch.randn(4, 8)
    expected = merged(x * m_i) * m_o.repeat_interleave(2)
    assert torch.allclose(a(x), expected, atol=1e-6)
    assert not torch.allclose(merged.weight, a.base.weight)  # B != 0 folded in


def test_masks_receive_gradients_and_are_not_parameters():
    a = APTLinear(_linear(), r=2)
    _randomize_b(a)
    heads = nn.Parameter(torch.ones(2))  # 2 heads of head_dim 2 over d_out = 4
    hidden = torch.ones(6, requires_grad=True)
    a.set_masks(hidden, heads, out_group=2)
    assert {n for n, _ in a.named_parameters()} == {"base.weight", "base.bias", "lora_A", "lora_B"}
    a(torch.randn(3, 6)).sum().backward()
    assert heads.grad is not None and heads.grad.shape == (2,)
    assert hidden.grad is not None and hidden.grad.abs().sum() > 0
    with pytest.raises(LmpruneError, match="out_group"):
        a.set_masks(out_mask=torch.ones(3))


# --- whole models ------------------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    ("tiny-bert", {"attention.self.query": 2, "attention.self.value": 2, "intermediate.dense": 2}),
    ("tiny-llama", {"self_attn.q_proj": 2, "self_attn.v_proj": 2}),
    ("tiny-t5", {"SelfAttention.q": 4, "SelfAttention.v": 4, "EncDecAttention.q": 2,
                 "EncDecAttention.v": 2, "DenseReluDense.wi": 4}),
    ("tiny-t5-gated", {"SelfAttention.q": 4, "SelfAttention.v": 4, "EncDecAttention.q": 2,
                       "EncDecAttention.v": 2, "DenseReluDense.wi_0": 4}),
])
def test_apply_apt_wraps_expected_modules(name, expected):
    model = build_tiny(name)
    structure_before = describe(model)
    reference = _logits(model, name)
    wrapped = apply_apt(model)
    counts = {suffix: sum(p.endswith(suffix) for p in wrapped) for suffix in expected}
    assert counts == expected and len(wrapped) == sum(expected.values())
    assert set(apt_modules(model)) == set(wrapped)
    # B = 0: the wrapped model computes exactly what the stock one did.
    assert torch.equal(_logits(model, name), reference)
    # describe still works and sees the same sites, paths and sizes.
    assert describe(model) == structure_before
    # Only the adapters train: Σ (d_in + d_out) · r.
    trainable = trainable_parameters(model)
    assert all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    assert len(trainable) == 2 * len(wrapped)
    assert adapter_parameter_count(model) == sum(
        (m.in_features + m.out_features) * 8 for m in wrapped.values())


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-llama", "tiny-t5"])
def test_merge_apt_restores_plain_linears_and_outputs(name):
    model = build_tiny(name)
    wrapped = apply_apt(model, r=4, generator=torch.Generator().manual_seed(0))
    for i, adapter in enumerate(wrapped.values()):
        _randomize_b(adapter, seed=i)
        with torch.no_grad():
            adapter.lora_B.mul_(0.05)
    adapted = _logits(model, name)
    merged = merge_apt(model)
    assert set(merged) == set(wrapped) and not apt_modules(model)
    assert all(type(model.get_submodule(p)) is nn.Linear for p in merged)
    assert torch.allclose(_logits(model, name), adapted, atol=1e-5)


def test_apply_apt_growth_on_model_and_backward():
    name = "tiny-llama"
    model = build_tiny(name)
    wrapped = apply_apt(model)
    for adapter in wrapped.values():
        _randomize_b(adapter)
    before = _logits(model, name)
    count = adapter_parameter_count(model)
    for adapter in wrapped.values():
        adapter.grow_rank(10)
    assert (_logits(model, name) - before).abs().max() <= 1e-5
    assert adapter_parameter_count(model) - count == sum(
        (m.in_features + m.out_features) * 2 for m in wrapped.values())
    model(**_inputs(name)).logits.sum().backward()
    assert all(p.grad is not None for p in trainable_parameters(model).values())


def test_apply_apt_targets_and_errors():
    model = build_tiny("tiny-llama")
    wrapped = apply_apt(model, targets=["o", "model.layers.0.mlp.up_proj"], r=2)
    assert sorted(wrapped) == ["model.layers.0.mlp.up_proj", "model.layers.0.self_attn.o_proj",
                               "model.layers.1.self_attn.o_proj"]
    with pytest.raises(LmpruneError, match="already holds"):
        apply_apt(model, targets=["o"])
    with pytest.raises(LmpruneError, match="not a linear"):
        apply_apt(model, targets=["model.layers.0.mlp"])
    with pytest.raises(LmpruneError, match="no module"):
        apply_apt(model, targets=["model.layers.9.mlp.up_proj"])


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-llama", "tiny-t5"])
def test_structure_masks_still_apply_after_wrapping(name):
    from lmprune.structures import Masks, apply_masks

    model = build_tiny(name)
    structure = describe(model)
    masks = Masks.ones(structure, kinds=("heads", "neurons", "hidden"))
    g = torch.Generator().manual_seed(0)
    for _, _, tensor in masks.items():
        tensor.copy_((torch.rand(tensor.shape, generator=g) > 0.3).float())
    masks.hidden.copy_((torch.rand(masks.hidden.shape, generator=g) > 0.2).float())
    with apply_masks(model, masks, structure):
        reference = _logits(model, name)
    apply_apt(model)
    with apply_masks(model, masks):  # describes the wrapped model again
        assert torch.allclose(_logits(model, name), reference, atol=1e-6)


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-llama", "tiny-t5"])
def test_removal_cuts_adapters_with_their_linears(name):
    """masked == removed with APT adapters in place (what compaction during training does)."""
    from lmprune.structures import Masks, apply_masks, remove
    from lmprune.structures.moves import ParamMoves

    torch.manual_seed(0)
    model = build_tiny(name).double()
    adapters = apply_apt(model)
    for a in adapters.values():
        nn.init.normal_(a.lora_B, std=0.1)
    structure = describe(model)
    masks = Masks.ones(structure, kinds=("heads", "neurons", "hidden"), dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    for site in structure.attention:  # equal heads per key/value group (grouped queries)
        keep = torch.ones(site.num_kv_heads, site.group_size, dtype=torch.float64)
        keep[:, torch.randperm(site.group_size, generator=g)[:max(1, site.group_size // 2)]] = 0
        masks.heads[site.name] = keep.reshape(-1) if site.group_size > 1 else \
            (torch.rand(site.num_heads, generator=g) > 0.4).double()
    for site in structure.ffn:
        masks.neurons[site.name] = (torch.rand(site.width, generator=g) > 0.5).double()
    masks.hidden = (torch.rand(structure.hidden.size, generator=g) > 0.3).double()
    with torch.no_grad(), apply_masks(model, masks, structure):
        expected = _logits(model, name)
    moves = ParamMoves()
    old = {id(a.lora_B): a.lora_B.detach().clone() for a in adapters.values()}
    remove(model, masks, structure, moves=moves)
    with torch.no_grad():
        # RMSNorm (LLaMA, T5) normalises in float32 even for a float64 model
        assert torch.allclose(_logits(model, name), expected, atol=1e-6)
    for a in apt_modules(model).values():  # A/B cut to the kept dims, recorded as moves
        assert a.lora_A.shape[1] == a.base.in_features and a.lora_B.shape[0] == a.base.out_features
        source = moves.source(a.lora_B)
        assert source is not None and torch.equal(moves.slice(a.lora_B, old[id(source)]),
                                                  a.lora_B.detach())


def test_growth_over_alive_columns_is_growth_of_the_compacted_adapter():
    base = nn.Linear(6, 4)
    masked, small = APTLinear(base, r=2), APTLinear(nn.Linear(3, 4), r=2)
    columns = torch.tensor([0, 2, 5])
    masked.grow_rank(4, torch.Generator().manual_seed(7), columns=columns)
    small.grow_rank(4, torch.Generator().manual_seed(7))
    assert torch.equal(masked.lora_A.data[2:, columns], small.lora_A.data[2:])
    assert masked.lora_A.data[2:, [1, 3, 4]].abs().sum() == 0
