"""Which tensor slices make up each group."""
from __future__ import annotations

import pytest
import torch

from lmprune.arch import describe
from lmprune.scorers.coupling import Slice, coupled_tensors
from lmprune.scorers.importances import GroupImportances
from lmprune.zoo import build_tiny

from scorer_toys import one_layer_llama


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2", "tiny-bert", "tiny-t5-gated"])
def test_hidden_channels_cover_every_tensor_with_a_hidden_dimension(name):
    model = build_tiny(name)
    structure = describe(model)
    size = structure.hidden.size
    expected = {n for n, p in model.named_parameters()
                if n.endswith("weight") and size in p.shape and "relative_attention_bias" not in n}
    tensors = coupled_tensors(model, structure, ("hidden",))
    assert {t.name for t in tensors} == expected
    for t in tensors:  # every slice indexes a dimension of hidden size, one channel per unit
        assert all(s.kind == "hidden" and t.param.shape[s.dim] == size and s.unit == 1
                   for s in t.slices), t.name


def test_readers_are_sliced_by_column_and_writers_by_row():
    model = one_layer_llama()
    slices = {t.name: t.slices for t in coupled_tensors(model, describe(model), ("hidden",))}
    assert slices["model.layers.0.self_attn.q_proj.weight"] == [Slice("hidden", "", 1)]
    assert slices["model.layers.0.mlp.down_proj.weight"] == [Slice("hidden", "", 0)]
    assert slices["model.embed_tokens.weight"] == [Slice("hidden", "", 1)]
    assert slices["model.norm.weight"] == [Slice("hidden", "", 0)]


def test_grouped_query_slices():
    model = one_layer_llama(num_kv_heads=2)  # 8 query heads of 8 dims, 4 per kv group
    tensors = coupled_tensors(model, describe(model), ("heads", "kv_groups"))
    slices = {t.name.split(".")[-2]: t.slices for t in tensors}
    site = "layers.0.attn"
    # a head owns 8 rows = 8 channels; a kv group 32 q rows folded onto its 8 channels
    assert slices["q_proj"] == [Slice("heads", site, 0, 8, 8), Slice("kv_groups", site, 0, 32, 8)]
    assert slices["k_proj"] == [Slice("kv_groups", site, 0, 8, 8)]  # no query head owns k rows
    assert slices["o_proj"] == [Slice("heads", site, 1, 8, 8), Slice("kv_groups", site, 1, 32, 8)]
    assert [t.name.split(".")[-2] for t in tensors] == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_tied_embeddings_are_one_tensor():
    model = build_tiny("tiny-llama")
    model.lm_head.weight = model.model.embed_tokens.weight
    tensors = coupled_tensors(model, describe(model), ("hidden",))
    tied = [t for t in tensors if t.param is model.lm_head.weight]
    assert len(tied) == 1 and tied[0].slices == [Slice("hidden", "", 1)]


def test_layer_range_limits_sites_but_not_the_hidden_channel():
    model = one_layer_llama(layers=3)
    names = {t.name for t in coupled_tensors(model, describe(model), ("neurons", "layers"), [1, 2])}
    assert names and all(n.startswith("model.layers.1.") for n in names)
    assert len(coupled_tensors(model, describe(model), ("hidden",), [1, 2])) == \
        sum(1 for n, p in model.named_parameters() if 64 in p.shape)


def test_sublayer_and_layer_tensors():
    model = one_layer_llama()
    tensors = coupled_tensors(model, describe(model), ("layers",))
    kinds = {t.name: {s.kind for s in t.slices} for t in tensors}
    assert kinds["model.layers.0.input_layernorm.weight"] == {"attention", "layers"}
    assert kinds["model.layers.0.mlp.down_proj.weight"] == {"ffn", "layers"}
    assert len(kinds) == 9 and all("layers" in k for k in kinds.values())
    assert torch.is_tensor(tensors[0].param)


def test_prod_over_many_tensors_warns_when_it_underflows():
    collected = GroupImportances()
    for order in range(300):  # a hidden channel of a deep model spans hundreds of tensors
        collected.add(order, 0, Slice("hidden", "", 0), torch.full((4,), 1e-5))
    with pytest.warns(UserWarning, match="underflowed"):
        scores = collected.scores(describe(one_layer_llama()), "prod")
    assert scores.hidden.tolist() == [0.0] * 4
    assert collected.scores(describe(one_layer_llama()), "sum").hidden.tolist() == \
        pytest.approx([300e-5] * 4)
