"""Kwon et al.'s mask tuning: the least squares it solves, the error it lowers, and folding
the scales into the weights (tiny-bert: post-norm; tiny-llama: pre-norm, grouped-query)."""
from __future__ import annotations

import pytest
import torch

from lmprune.arch import describe
from lmprune.errors import MaskError
from lmprune.pruners._mask_search import mask_search
from lmprune.pruners._mask_tuning import (NormalEquations, fold_masks, site_reconstruction_error,
                                          solve_scales, tune_masks)
from lmprune.structures import Masks, apply_masks, remove
from lmprune.zoo import build_tiny

from test_mask_search import make_batches

pytestmark = pytest.mark.usefixtures("one_thread")
DAMPING = 1e-3  # Kwon's absolute damp=1 swamps the tiny models' normal equations


def random_masks(model, seed: int = 0, real: bool = True) -> Masks:
    """Heads and neurons with some zeros and, if ``real``, kept values in [0.5, 1.5]."""
    gen = torch.Generator().manual_seed(seed)
    masks = Masks.ones(describe(model), kinds=("heads", "neurons"))
    for table in (masks.heads, masks.neurons):
        for name, mask in table.items():
            keep = (torch.rand(mask.shape, generator=gen) < 0.6).float()
            keep[0] = 1.0
            values = 0.5 + torch.rand(mask.shape, generator=gen) if real else 1.0
            table[name] = keep * values
    return masks


def sublayer_output(model, masks, batch, norm_path):
    """The sublayer output (residual included) as the input of the norm that follows it."""
    got = {}
    handle = model.get_submodule(norm_path).register_forward_pre_hook(
        lambda m, args: got.__setitem__("x", args[0]))
    with torch.no_grad(), apply_masks(model, masks):
        model(**batch)
    handle.remove()
    return got["x"]


@pytest.mark.parametrize("name, site, norm", [
    ("tiny-bert", "layers.1.attn", "bert.encoder.layer.1.attention.output.LayerNorm"),
    ("tiny-bert", "layers.1.ffn", "bert.encoder.layer.1.output.LayerNorm"),
    ("tiny-llama", "layers.1.attn", "model.layers.1.post_attention_layernorm"),
    ("tiny-llama", "layers.0.ffn", "model.layers.1.input_layernorm"),
])
def test_least_squares_error_equals_the_measured_sublayer_error(name, site, norm):
    model = build_tiny(name)
    batches = make_batches(name, 2, 3)
    masks = random_masks(model)
    measured = sum(float((sublayer_output(model, Masks(), b, norm)
                          - sublayer_output(model, masks, b, norm)).pow(2).sum()) for b in batches)
    assert site_reconstruction_error(model, masks, batches, site) == pytest.approx(measured, rel=1e-4)


def test_solve_scales_on_a_hand_example():
    eq = NormalEquations(torch.arange(2), torch.diag(torch.tensor([2.0, 4.0])).double(),
                         torch.tensor([2.0, 8.0]).double())
    assert solve_scales(eq, torch.ones(2), damping=0.0).tolist() == pytest.approx([1.0, 2.0])
    # d = argmin ||A d - (b - A 1)||^2 + ||d||^2: d_2 = 4 * 4 / (16 + 1)
    assert solve_scales(eq, torch.ones(2), damping=1.0).tolist() == pytest.approx([1.0, 1 + 16 / 17])


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-llama"])
def test_tuning_lowers_the_reconstruction_error_and_keeps_pruned_units_at_zero(name):
    model = build_tiny(name)
    batches = make_batches(name, 4, 4, seed=1)
    binary = random_masks(model, seed=3, real=False)
    tuned = tune_masks(model, binary, batches, damping=DAMPING)
    before, after = [], []
    for site in [s.name for s in describe(model).attention + describe(model).ffn]:
        before.append(site_reconstruction_error(model, binary, batches, site))
        after.append(site_reconstruction_error(model, tuned, batches, site))
    assert all(a <= b * (1 + 1e-6) + 1e-9 for a, b in zip(after, before)), (before, after)
    assert sum(after) < 0.99 * sum(before)
    for kind in ("heads", "neurons"):
        for site, mask in getattr(binary, kind).items():
            values = getattr(tuned, kind)[site]
            assert torch.equal(values == 0, mask == 0), site
            assert bool(((mask == 0) | (mask == 1)).all()), "the input masks changed"
    assert not tuned.is_binary()


def test_tuning_refuses_masks_it_cannot_scale():
    model = build_tiny("tiny-bert")
    masks = random_masks(model, real=False)
    masks.attention["layers.0.attn"] = torch.tensor(1.0)
    with pytest.raises(MaskError, match="head and neuron"):
        tune_masks(model, masks, make_batches("tiny-bert", 1, 2))


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-llama"])
def test_folded_weights_with_binary_masks_compute_the_scaled_model(name):
    model = build_tiny(name)
    batch = make_batches(name, 1, 3)[0]
    scaled = random_masks(model, seed=5)
    with torch.no_grad(), apply_masks(model, scaled):
        expected = model(**batch).logits
    binary = fold_masks(model, scaled)
    assert binary.is_binary()
    with torch.no_grad(), apply_masks(model, binary):
        assert torch.allclose(model(**batch).logits, expected, atol=1e-5)


def test_search_tune_fold_remove_end_to_end():
    model = build_tiny("tiny-bert")
    batches = make_batches("tiny-bert", 3, 4)
    masks = mask_search(model, batches, 0.5)
    tuned = tune_masks(model, masks, batches, damping=DAMPING)
    with torch.no_grad(), apply_masks(model, tuned):
        expected = model(**batches[0]).logits
    remove(model, fold_masks(model, tuned))
    with torch.no_grad():
        assert torch.allclose(model(**batches[0]).logits, expected, atol=1e-5)
