"""MPNet's shared relative position bias survives head removal, saving and pruning again.

MPNet's encoder computes one bias over all original heads (``relative_attention_bias``:
[buckets, heads]) and adds it to every layer's scores; each layer with pruned heads must take
its own heads' slice. A random tiny model's bias is too small to show in the logits (~1e-6), so
these tests give it a large scale first and compare last hidden states.
"""
from __future__ import annotations

import torch
import transformers

from lmprune import load_pretrained
from lmprune.arch import describe
from lmprune.structures import Masks, apply_masks, remove
from lmprune.structures.export import save_pretrained

from mask_recipes import fresh, inputs_for


KEPT = {"layers.0.attn": [1, 3], "layers.1.attn": [0, 2, 3]}


def hidden(model, inputs) -> torch.Tensor:
    """The last hidden state (a random classifier head makes logits too small to compare)."""
    with torch.no_grad():
        return model(**inputs, output_hidden_states=True).hidden_states[-1]


def strong_bias_mpnet():
    model, structure = fresh("tiny-mpnet")
    with torch.no_grad():
        bias = model.mpnet.encoder.relative_attention_bias.weight
        bias.copy_(torch.randn(bias.shape, generator=torch.Generator().manual_seed(0)) * 3)
    return model, structure


def head_masks(structure, kept: dict) -> Masks:
    masks = Masks.ones(structure, ("heads",))
    for site, heads in kept.items():
        masks.heads[site] = torch.zeros(structure.attention_site(site).num_heads)
        masks.heads[site][heads] = 1.0
    return masks


def test_bias_matters_in_this_setting():
    model, _ = strong_bias_mpnet()
    inputs = inputs_for(model)
    before = hidden(model, inputs)
    with torch.no_grad():
        model.mpnet.encoder.relative_attention_bias.weight.zero_()
    assert (hidden(model, inputs) - before).abs().max() > 1e-2


def test_each_layer_takes_its_own_heads_slice():
    model, structure = strong_bias_mpnet()
    inputs = inputs_for(model)
    masks = head_masks(structure, KEPT)
    with apply_masks(model, masks, structure):
        masked = hidden(model, inputs)
    remove(model, masks, structure)
    attn = model.mpnet.encoder.layer[1].attention.attn
    assert attn.lmprune_kept_heads == (0, 2, 3) and attn.q.out_features == 3 * 8
    assert (hidden(model, inputs) - masked).abs().max() <= 1e-5
    attn.lmprune_kept_heads = (0, 1, 2)  # the right number of heads, the wrong bias slice
    assert (hidden(model, inputs) - masked).abs().max() > 1e-3


def test_pruning_twice_composes_kept_heads():
    model, structure = strong_bias_mpnet()
    inputs = inputs_for(model)
    remove(model, head_masks(structure, KEPT), structure)
    pruned = describe(model)
    again = Masks.ones(pruned, ("heads",))
    again.heads["layers.1.attn"] = torch.tensor([0.0, 1.0, 0.0])  # of (0, 2, 3): keeps head 2
    remove(model, again, pruned)
    assert model.mpnet.encoder.layer[1].attention.attn.lmprune_kept_heads == (2,)
    once, once_structure = strong_bias_mpnet()
    remove(once, head_masks(once_structure, {"layers.0.attn": [1, 3], "layers.1.attn": [2]}),
           once_structure)
    assert (hidden(model, inputs) - hidden(once, inputs)).abs().max() <= 1e-5


def test_saved_model_reloads_with_the_bias_slices(tmp_path):
    model, structure = strong_bias_mpnet()
    inputs = inputs_for(model)
    remove(model, head_masks(structure, KEPT), structure)
    expected = hidden(model, inputs)
    result = save_pretrained(model, tmp_path / "pruned")
    assert result.format == "remote-code"
    stock = transformers.AutoModelForSequenceClassification.from_pretrained(
        tmp_path / "pruned", trust_remote_code=True).eval()
    assert (hidden(stock, inputs) - expected).abs().max() <= 1e-5
    ours = load_pretrained(tmp_path / "pruned")
    assert (hidden(ours, inputs) - expected).abs().max() <= 1e-5
    assert ours.mpnet.encoder.relative_attention_bias.weight.shape == (32, 4)
