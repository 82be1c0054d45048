"""Parameter counts against closed-form formulas from the config; group costs are exact."""
from __future__ import annotations

import pytest
import torch

from lmprune.arch import describe
from lmprune.structures import Masks, remove
from lmprune.structures.counting import (count_flops, count_parameters, head_cost, hidden_cost,
                                         neuron_cost, sublayer_cost)

from mask_recipes import TINY, fresh, random_masks


def closed_form(config, model_type: str, task_head: int) -> int:
    """Parameters of a uniform model, from its config alone (hand-derived per family)."""
    c = config
    if model_type in ("llama", "mistral", "qwen2"):
        d, hd = c.hidden_size, c.head_dim
        qkv_bias = (c.num_attention_heads + 2 * c.num_key_value_heads) * hd if model_type == "qwen2" else 0
        attn = d * hd * (2 * c.num_attention_heads + 2 * c.num_key_value_heads) + qkv_bias
        ffn = 3 * d * c.intermediate_size
        layer = attn + ffn + 2 * d
        return c.vocab_size * d + c.num_hidden_layers * layer + d + task_head
    if model_type in ("bert", "roberta", "mpnet"):
        d, f = c.hidden_size, c.intermediate_size
        # BERT's head size is fixed by the *original* hidden size / heads
        original = getattr(c, "lmprune_original", None) or {}
        inner = original.get("hidden_size", d) // original.get("num_attention_heads", c.num_attention_heads) \
            * c.num_attention_heads
        attn = 3 * (d * inner + inner) + inner * d + d + 2 * d
        ffn = 2 * d * f + f + d + 2 * d
        if model_type == "mpnet":  # no token types; one [buckets, original heads] bias table
            emb = (c.vocab_size + c.max_position_embeddings) * d + 2 * d
            emb += c.relative_attention_num_buckets * original.get("num_attention_heads",
                                                                   c.num_attention_heads)
        else:
            emb = (c.vocab_size + c.max_position_embeddings + c.type_vocab_size) * d + 2 * d
        return emb + c.num_hidden_layers * (attn + ffn) + task_head
    raise ValueError(model_type)


def task_head_params(model) -> int:
    structure = describe(model)
    return count_parameters(model, structure).heads


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2", "tiny-mistral", "tiny-bert",
                                  "tiny-roberta", "tiny-mpnet"])
def test_uniform_pruned_count_matches_config_formula(name):
    model, structure = fresh(name)
    masks = Masks.ones(structure, ("neurons", "hidden", "layers"))
    for key in masks.neurons:
        masks.neurons[key][::3] = 0
    masks.hidden[:8] = 0
    masks.layers[structure.layers[-1].name] = torch.tensor(0.0)
    if any(s.group_size > 1 for s in structure.attention):
        masks.kv_groups = {s.name: torch.tensor([0.0] + [1.0] * (s.num_kv_heads - 1)) for s in structure.attention}
    remove(model, masks, structure)
    actual = sum(p.numel() for p in model.parameters())
    # the task head of an LM: an untied lm_head (d*V); of a classifier: pooler/classifier
    assert actual == closed_form(model.config, model.config.model_type, task_head_params(model))
    assert count_parameters(model).total == actual


@pytest.mark.parametrize("name", TINY)
def test_count_parts_add_up(name):
    model, structure = fresh(name)
    count = count_parameters(model, structure)
    unique = {id(p): p.numel() for p in model.parameters()}
    assert count.total == sum(unique.values())
    assert count.embeddings + count.heads + count.body == count.total
    assert count.embeddings == model.get_input_embeddings().weight.numel() + sum(
        model.get_submodule(p).weight.numel() for p in structure.hidden.embeddings[1:])
    assert sum(count.per_layer.values()) <= count.body


@pytest.mark.parametrize("name", TINY)
def test_group_costs_equal_removed_parameters(name):
    """Removing one unit of a kind removes exactly its cost in parameters."""
    for kind in ("neuron", "head", "kv_group", "hidden", "sublayer"):
        model, structure = fresh(name)
        before = count_parameters(model, structure).total
        att, ffn = structure.attention[-1], structure.ffn[-1]
        masks = Masks()
        if kind == "neuron":
            masks.neurons[ffn.name] = torch.ones(ffn.width)
            masks.neurons[ffn.name][0] = 0
            cost = neuron_cost(model, ffn)
        elif kind == "head":
            if att.group_size > 1:
                continue  # one query head per group would break the grouping; see kv_group
            masks.heads[att.name] = torch.ones(att.num_heads)
            masks.heads[att.name][1] = 0
            cost = head_cost(model, att)["head"]
        elif kind == "kv_group":
            if att.group_size == 1:
                continue
            masks.kv_groups[att.name] = torch.ones(att.num_kv_heads)
            masks.kv_groups[att.name][0] = 0
            cost = head_cost(model, att)["kv_group"]
        elif kind == "hidden":
            masks.hidden = torch.ones(structure.hidden.size)
            masks.hidden[2] = 0
            cost = hidden_cost(model, structure)
        else:
            masks.ffn[ffn.name] = torch.tensor(0.0)
            cost = sublayer_cost(model, ffn)
        remove(model, masks, structure)
        assert before - count_parameters(model).total == cost, (name, kind)


def test_flops_scale_with_sequence_and_width():
    model, structure = fresh("tiny-llama")
    f128, f256 = count_flops(model, 128, structure), count_flops(model, 256, structure)
    assert f256["linear"] == 2 * f128["linear"]
    assert f256["attention"] == 4 * f128["attention"]
    d, ff, vocab, layers = 64, 96, 128, 2  # tiny-llama: 8 query heads and 2 kv heads of 8
    per_layer = d * 64 + 2 * d * 16 + 64 * d + 3 * d * ff  # q, k, v, o, gate, up, down
    assert f128["linear"] == 2 * 128 * (layers * per_layer + d * vocab)
    assert f128["attention"] == layers * 2 * 2 * 128 * 128 * 64
    remove(model, random_masks(structure, ("neurons",), seed=0), structure)
    assert count_flops(model, 128)["linear"] < f128["linear"]
