"""Bad input fails with an error that names the problem and the fix; nothing is written."""
from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lmprune.arch import describe
from lmprune.config import load_config
from lmprune.errors import ConfigError, LmpruneError, MaskError, PlanError, UnknownNameError, UnsupportedModelError
from lmprune.pruners.random import prune_random
from lmprune.pruners.selection import select
from lmprune.structures import Masks, apply_masks, remove
from lmprune.structures.export import save_pretrained
from lmprune.structures.plan import PruningPlan, apply_plan
from lmprune.zoo import load_model

from mask_recipes import fresh, inputs_for


def test_wrong_mask_shape_names_site_and_shapes():
    model, structure = fresh("tiny-llama")
    masks = Masks.ones(structure, ("neurons",))
    masks.neurons["layers.0.ffn"] = torch.ones(7)
    with pytest.raises(MaskError, match=r"layers\.0\.ffn has shape \(7,\), expected \(96,\)"):
        with apply_masks(model, masks, structure):
            pass
    with pytest.raises(MaskError, match="Masks.ones"):
        remove(model, masks, structure)


def test_unknown_site_lists_valid_sites():
    model, structure = fresh("tiny-bert")
    masks = Masks(heads={"layers.9.attn": torch.ones(4)})
    with pytest.raises(MaskError, match=r"unknown site 'layers\.9\.attn'.*layers\.0\.attn"):
        masks.validate(structure)


def test_soft_masks_cannot_be_removed():
    model, structure = fresh("tiny-bert")
    masks = Masks.ones(structure, ("neurons",))
    masks.neurons["layers.0.ffn"][0] = 0.5
    with pytest.raises(MaskError, match="binary"):
        remove(model, masks, structure)


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5])
def test_sparsity_outside_range(sparsity):
    with pytest.raises(ConfigError, match=r"sparsity: must be in \[0, 1\)"):
        load_config("demo", [f"prune.sparsity={sparsity}"])
    model, structure = fresh("tiny-llama")
    from lmprune.pruners.random import random_scores

    with pytest.raises(LmpruneError, match=r"sparsity must be in \[0, 1\)"):
        select(structure, random_scores(structure), sparsity, ["neurons"])


def test_plan_for_a_different_model():
    model, structure = fresh("tiny-llama")
    plan = PruningPlan.from_masks(structure, Masks.ones(structure, ("neurons",)))
    other, _ = fresh("tiny-bert")
    with pytest.raises(PlanError, match="(?s)different model.*model_type: plan has 'llama', model has 'bert'"):
        apply_plan(other, plan)
    pruned, pruned_structure = fresh("tiny-llama")
    masks = Masks.ones(pruned_structure, ("neurons",))
    masks.neurons["layers.0.ffn"][:10] = 0
    remove(pruned, masks, pruned_structure)
    with pytest.raises(PlanError, match=r"(?s)ffn layers\.0\.ffn: plan has 96, model has 86.*fresh copy"):
        apply_plan(pruned, plan)


def test_removing_every_head():
    model, structure = fresh("tiny-bert")
    masks = Masks.ones(structure, ("heads",))
    for name in masks.heads:
        masks.heads[name].zero_()
    with pytest.raises(MaskError, match="every attention head"):
        remove(model, masks, structure)


def test_head_counts_that_break_kv_grouping():
    model, structure = fresh("tiny-llama")  # 8 query heads over 2 kv groups of 4
    masks = Masks.ones(structure, ("heads",))
    masks.heads["layers.0.attn"] = torch.tensor([1, 1, 1, 0, 1, 0, 0, 0.0])
    with pytest.raises(MaskError, match=r"(?s)layers\.0\.attn: query heads kept per key/value group are \[3, 1\].*kv_groups"):
        remove(model, masks, structure)


def test_failed_removal_leaves_model_untouched():
    model, structure = fresh("tiny-llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = Masks.ones(structure, ("heads", "neurons"))
    masks.neurons["layers.0.ffn"][:5] = 0
    masks.heads["layers.1.attn"] = torch.tensor([1, 0, 0, 0, 1, 1, 0, 0.0])
    with pytest.raises(MaskError):
        remove(model, masks, structure)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_unknown_model_alias():
    with pytest.raises(UnknownNameError) as info:
        load_model("tiny-lama")
    message = str(info.value)
    assert "tiny-llama" in message and "network" in message


def test_unsupported_architecture_names_model_type_and_supported_list():
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedModelError, match=r"'gpt2'.*bert, llama, mistral, mpnet, qwen2, roberta, t5"):
        describe(model)


def test_nothing_written_on_failure(tmp_path, monkeypatch):
    model, _ = fresh("tiny-llama")
    out = tmp_path / "out"

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(model, "save_pretrained", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        save_pretrained(model, out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary directory left behind either


def test_existing_output_is_not_overwritten(tmp_path):
    model, _ = fresh("tiny-llama")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(LmpruneError, match="already exists.*overwrite"):
        save_pretrained(model, out)
    assert (out / "keep.txt").read_text() == "mine"
    save_pretrained(model, out, overwrite=True)
    assert (out / "config.json").exists() and not (out / "keep.txt").exists()


def test_random_pruner_respects_layer_range_and_structures():
    model, structure = fresh("tiny-llama")
    config = load_config("demo", ["prune.sparsity=0.5", "prune.layer_range=[1, 2]",
                                  "prune.structures=[kv_groups, neurons]", "prune.budget=units"])
    masks = prune_random(model, structure, config)
    assert set(masks.neurons) == {"layers.1.ffn"} and set(masks.kv_groups) == {"layers.1.attn"}
    assert int(masks.kv_groups["layers.1.attn"].sum()) == 1
    assert int(masks.neurons["layers.1.ffn"].sum()) == 48
    with apply_masks(model, masks, structure):
        model(**inputs_for(model))
