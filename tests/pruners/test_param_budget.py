"""Parameter budgets: exact counts on a meta copy, every method on target, allocations."""
from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmprune.arch import describe
from lmprune.config import load_config
from lmprune.data.calibration import Calibration
from lmprune.pruners.param_budget import TOLERANCE, ShareCounter, counts_at, select_params
from lmprune.pruners.random import random_scores
from lmprune.pruners.selection import select
from lmprune.pruners.settings import auto_layer_range, prune_settings, resolve_layer_range
from lmprune.registry import METHODS, load_builtin_methods
from lmprune.structures import remove
from lmprune.structures.counting import count_parameters
from lmprune.zoo import build_tiny, tiny_config


def deep_llama(layers: int = 4, seed: int = 0):
    config = tiny_config("tiny-llama")
    config.num_hidden_layers = layers
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config).eval()


def removed_share(model, masks) -> float:
    pruned = remove(copy.deepcopy(model), masks)
    return 1 - count_parameters(pruned).body / count_parameters(model).body


@pytest.mark.parametrize("name, kinds", [
    ("tiny-llama", ["heads", "neurons"]), ("tiny-llama", ["kv_groups", "neurons", "hidden"]),
    ("tiny-qwen2", ["heads", "neurons"]), ("tiny-bert", ["heads", "neurons", "hidden"]),
])
def test_meta_copy_counts_what_physical_removal_removes(name, kinds):
    model = build_tiny(name)
    structure = describe(model)
    masks = select(structure, random_scores(structure, 3), 0.4, kinds)
    assert ShareCounter(model, structure)(masks) == pytest.approx(removed_share(model, masks))
    assert all(p.device.type != "meta" for p in model.parameters())


@pytest.mark.parametrize("target", [0.2, 0.37])
@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_unit_kinds_land_on_the_target(target, allocation):
    model = deep_llama()
    structure = describe(model)
    outcome = select_params(model, structure, random_scores(structure, 1), target,
                            ["heads", "neurons"], allocation=allocation)
    assert abs(removed_share(model, outcome.masks) - target) <= TOLERANCE
    assert outcome.achieved == pytest.approx(removed_share(model, outcome.masks))
    for site in structure.attention:  # grouped-query heads: equal counts per group
        kept = outcome.masks.heads[site.name].view(site.num_kv_heads, site.group_size).sum(1)
        assert len(set(kept.tolist())) == 1


def test_uniform_counts_do_not_depend_on_the_scores():
    """Any two score sets prune the same number of units at every site (uniform), spread so
    that sites differ by at most one unit."""
    model = deep_llama()
    structure = describe(model)
    kinds = ["heads", "neurons"]
    a = select_params(model, structure, random_scores(structure, 1), 0.3, kinds).masks
    b = select_params(model, structure, random_scores(structure, 2), 0.3, kinds).masks
    for kind in kinds:
        counts = [int((m == 0).sum()) for m in getattr(a, kind).values()]
        assert counts == [int((m == 0).sum()) for m in getattr(b, kind).values()]
        assert max(counts) - min(counts) <= 1
    assert any(not torch.equal(a.neurons[s], b.neurons[s]) for s in a.neurons)


def test_global_allocation_takes_the_least_important_units_first():
    """One layer's neurons carry almost no importance: global pruning takes them first, the
    uniform allocation takes the same share everywhere."""
    model = deep_llama()
    structure = describe(model)
    scores = random_scores(structure, 0)
    for site in structure.attention:  # per parameter still far above any neuron
        scores.heads[site.name] += 1000.0
    for i, site in enumerate(structure.ffn):
        scores.neurons[site.name] = scores.neurons[site.name] + (0.0 if i == 2 else 10.0)
    kinds = ["heads", "neurons"]
    glob = select_params(model, structure, scores, 0.2, kinds, allocation="global").masks
    uni = select_params(model, structure, scores, 0.2, kinds).masks
    gone = {s: int((m == 0).sum()) for s, m in glob.neurons.items()}
    assert gone["layers.2.ffn"] == 95  # all but the one neuron a site keeps
    assert max(v for s, v in gone.items() if s != "layers.2.ffn") < 20
    assert len({int((m == 0).sum()) for m in uni.neurons.values()}) <= 2
    assert all(float(m.sum()) == m.numel() for m in glob.heads.values())  # heads: important


@pytest.mark.parametrize("method, extra", [
    ("taylor", []), ("magnitude", []), ("random", []),
    ("adapruner", ["adapruner.trials=2", "adapruner.pool_size=2", "adapruner.heldout=1"]),
    ("sublayer-ri", ["prune.structures=[attention,ffn]"]),
])
def test_every_method_removes_the_requested_share(method, extra):
    load_builtin_methods()
    model = deep_llama(seed=1)
    ids = torch.randint(3, 128, (6, 16), generator=torch.Generator().manual_seed(0))
    calibration = Calibration(samples=ids[:2], heldout=ids[2:3], pool=ids[3:5],
                              dataset="random", split="train", seq_len=16, confirm=ids[5:6])
    run = load_config(None, [f"prune.method={method}", "prune.sparsity=0.3",
                             "data.num_samples=2", "data.seq_len=16", *extra])
    masks = METHODS.get(method)(model, describe(model), run, calibration)
    assert abs(removed_share(model, masks) - 0.3) <= TOLERANCE


def test_whole_layers_come_as_close_as_a_layer_allows():
    model = deep_llama()
    structure = describe(model)
    outcome = select_params(model, structure, random_scores(structure, 0), 0.5, ["layers"])
    assert outcome.achieved == pytest.approx(0.5, abs=0.01)
    with pytest.warns(UserWarning, match="too coarse"):
        select_params(model, structure, random_scores(structure, 0), 0.3, ["layers"])


def test_auto_layer_range_keeps_llm_pruners_share_of_first_and_last_layers():
    assert auto_layer_range("taylor", 32) == [4, 30]  # LLM-Pruner's LLaMA-7B recipe
    assert auto_layer_range("taylor", 30) == [4, 28]  # SmolLM2-135M
    assert auto_layer_range("adapruner", 16) == [2, 15]
    assert auto_layer_range("taylor", 2) is None  # too shallow to keep any
    assert auto_layer_range("sublayer-ri", 30) is None
    assert auto_layer_range("block-influence", 30) is None
    bert = describe(build_tiny("tiny-bert"))
    assert resolve_layer_range("taylor", "auto", bert) is None  # no measurement on encoders
    assert resolve_layer_range("taylor", [1, 2], bert) == [1, 2]
    llama = describe(deep_llama(16))
    assert resolve_layer_range("magnitude", "auto", llama) == [2, 15]
    run = load_config(None, ["prune.method=taylor"])
    settings = prune_settings(run, llama)
    assert settings.layer_range == [2, 15] and settings.budget == "params"
    assert "layers 2..14" in settings.describe()


def test_heads_are_rounded_down_like_llm_pruner():
    """floor(s * heads) go (LLM-Pruner: 32 heads at 20% -> 6); grouped-query heads per group;
    'nearest' keeps round((1 - s) * heads) as the units budget does."""
    gqa = describe(deep_llama(2))  # 8 query heads in 2 groups of 4
    mha_model = deep_llama(2)
    mha_model.config.num_key_value_heads = 8
    mha = describe(AutoModelForCausalLM.from_config(mha_model.config))
    assert counts_at(gqa, 0.2, ["heads"])["heads"]["layers.0.attn"] == 0  # floor(0.8) per group
    assert counts_at(gqa, 0.3, ["heads"])["heads"]["layers.0.attn"] == 2  # 1 per group
    assert counts_at(gqa, 0.2, ["heads"], head_rounding="nearest")["heads"]["layers.0.attn"] == 2
    assert counts_at(mha, 0.2, ["heads"])["heads"]["layers.1.attn"] == 1  # floor(1.6)
    assert counts_at(mha, 0.99, ["heads"])["heads"]["layers.1.attn"] == 7  # one head stays
    assert counts_at(gqa, 0.5, ["kv_groups"])["kv_groups"]["layers.0.attn"] == 1
    assert counts_at(gqa, 0.25, ["neurons"])["neurons"]["layers.1.ffn"] == 24  # 96 - round(72)
