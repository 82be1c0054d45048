"""Width alignment (prune.round_to=auto), the unaligned-export warning, and what removal and
export must not do to speed: share a config, leave hooks, or export uniform widths as code."""
from __future__ import annotations

import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from lmprune.arch import describe
from lmprune.pruners.selection import Scores, keep_count, select
from lmprune.structures import Masks, remove
from lmprune.structures.alignment import (UnalignedWidthWarning, column_multiple, rounding_for,
                                          unaligned_widths, unit_multiple)
from lmprune.structures.export import load_pretrained, save_pretrained
from lmprune.zoo.tiny import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("columns, step", [(11008, 64), (4096, 64), (3072, 64), (2048, 64),
                                           (2047, 32), (1536, 32), (1024, 32), (768, 16),
                                           (576, 16), (384, 8), (256, 8), (255, 1), (96, 1)])
def test_the_rule_per_width(columns, step):
    assert column_multiple(columns) == step


def test_heads_need_no_rounding_when_head_dim_is_aligned():
    assert unit_multiple(32, 128) == 1  # LLaMA-7B: 4096 columns in steps of 128
    assert unit_multiple(12, 64) == 1  # RoBERTa-base
    # 800 columns round to steps of 16; a head of 20 columns shares 4 with 16: 4-head steps
    assert unit_multiple(40, 20) == 4
    assert rounding_for("auto", "heads", 40, 20) == 4
    assert rounding_for(8, "heads", 32, 128) == 1  # an integer round_to keeps heads exact
    assert rounding_for(8, "neurons", 3072) == 8


@pytest.mark.parametrize("width", range(256, 12000, 389))
@pytest.mark.parametrize("sparsity", [0.2, 0.4, 0.6, 0.8])
def test_aligned_widths_stay_within_one_64th_of_the_request(width, sparsity):
    step = rounding_for("auto", "neurons", width)
    kept = keep_count(width, sparsity, step)
    assert kept % step == 0 and 0 < kept <= width
    assert abs(kept - (1 - sparsity) * width) <= width / 64


def test_the_issue_examples():
    assert keep_count(3072, 0.6, rounding_for("auto", "neurons", 3072)) == 1216  # not 1229
    assert keep_count(11008, 0.2, rounding_for("auto", "neurons", 11008)) == 8832  # not 8806
    assert keep_count(3072, 0.6, rounding_for(1, "neurons", 3072)) == 1229


def _wide_llama(ffn: int = 1536, heads: int = 8, layers: int = 2):
    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=ffn,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def _random_scores(structure) -> Scores:
    g = torch.Generator().manual_seed(0)
    return Scores(heads={s.name: torch.rand(s.num_heads, generator=g) for s in structure.attention},
                  neurons={s.name: torch.rand(s.width, generator=g) for s in structure.ffn})


@pytest.mark.parametrize("round_to, width", [("auto", 1216), (1, 1229), (8, 1232)])
def test_select_aligns_neurons(round_to, width):
    model = _wide_llama(ffn=3072, layers=1)
    structure = describe(model)
    masks = select(structure, _random_scores(structure), 0.6, ["heads", "neurons"], round_to)
    assert int(masks.neurons["layers.0.ffn"].sum()) == width
    assert int(masks.heads["layers.0.attn"].sum()) == 4  # 2 per kv group, exact


def test_unaligned_exports_warn_and_aligned_ones_do_not(tmp_path):
    for round_to, expect in (("auto", []), (1, ["layers.0.ffn neurons: 1229",
                                                  "layers.1.ffn neurons: 1229"])):
        model = _wide_llama(ffn=3072)
        structure = describe(model)
        remove(model, select(structure, _random_scores(structure), 0.6, ["neurons"], round_to),
               structure)
        assert unaligned_widths(model) == expect
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            saved = save_pretrained(model, tmp_path / str(round_to))
        assert saved.unaligned == expect
        found = [w for w in caught if issubclass(w.category, UnalignedWidthWarning)]
        assert len(found) == (1 if expect else 0)
        if expect:
            assert "prune.round_to=auto" in str(found[0].message)


def test_removal_leaves_the_shared_config_alone():
    config = tiny_config("tiny-llama")
    first, second = (AutoModelForCausalLM.from_config(config) for _ in range(2))
    structure = describe(first)
    masks = Masks.ones(structure, ("heads", "neurons"))
    for site in structure.attention:
        masks.heads[site.name][torch.tensor([3, 7])] = 0  # 3 of 4 per group
    masks.neurons["layers.0.ffn"][:10] = 0
    remove(first, masks, structure)
    assert first.config.num_attention_heads == 6 and first.config is not config
    assert all(m.config is first.config for m in first.modules() if hasattr(m, "config"))
    assert config.num_attention_heads == 8 and second.config.num_attention_heads == 8
    third = AutoModelForCausalLM.from_config(config)  # failed before: 64 % 6 != 0
    assert describe(third).attention[0].num_heads == 8


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


def _pruned(sparsity: float, **kwargs):
    model = _wide_llama(**kwargs)
    structure = describe(model)
    remove(model, select(structure, _random_scores(structure), sparsity, ["heads", "neurons"],
                         "auto"), structure)
    return model


def test_exported_decoders_carry_no_hooks_and_uniform_widths_are_stock(tmp_path):
    model = _pruned(0.5)  # 4 of 8 heads: 4 x 8 columns = hidden / 2, a valid stock config
    assert _hooks(model) == 0
    saved = save_pretrained(model, tmp_path / "uniform")
    reloaded = load_pretrained(tmp_path / "uniform")
    assert saved.format == "stock" and type(reloaded).__name__ == "LlamaForCausalLM"
    assert _hooks(reloaded) == 0
    # 6 heads do not divide hidden 64, which stock LlamaConfig rejects: remote code, no hooks
    saved = save_pretrained(_pruned(0.25), tmp_path / "six-heads")
    assert saved.format == "remote-code" and _hooks(load_pretrained(saved.path)) == 0
    model = _wide_llama(ffn=1536)  # per-layer widths: remote code, no hooks either
    structure = describe(model)
    masks = Masks.ones(structure, ("neurons",))
    masks.neurons["layers.1.ffn"][:512] = 0
    remove(model, masks, structure)
    saved = save_pretrained(model, tmp_path / "per-layer")
    assert saved.format == "remote-code" and _hooks(load_pretrained(saved.path)) == 0
