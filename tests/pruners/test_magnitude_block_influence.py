"""The `magnitude` and `block-influence` methods end to end on tiny models."""
from __future__ import annotations

import pytest
import torch

from lmprune.arch import describe
from lmprune.config import load_config
from lmprune.data.calibration import Calibration
from lmprune.errors import LmpruneError
from lmprune.registry import METHODS, load_builtin_methods
from lmprune.structures import apply_masks, remove
from lmprune.zoo import build_tiny
from transformers import AutoModelForCausalLM

from lmprune.zoo import tiny_config


def calibration() -> Calibration:
    ids = torch.randint(3, 100, (4, 16), generator=torch.Generator().manual_seed(0))
    return Calibration(samples=ids, heldout=None, pool=None, dataset="random", split="train",
                       seq_len=16)


def method(name: str, model, overrides, calib=None):
    """Unit budgets (each site keeps round((1 - s) * units)) unless a test says otherwise."""
    load_builtin_methods()
    run = load_config(None, [f"prune.method={name}", "prune.budget=units", *overrides])
    return METHODS.get(name)(model, describe(model), run, calib)


def masked_minus_removed(model, masks) -> float:
    ids = calibration().samples[:2]
    structure = describe(model)
    with torch.no_grad():
        with apply_masks(model, masks, structure):
            masked = model(input_ids=ids).logits
        remove(model, masks, structure)
        return float((masked - model(input_ids=ids).logits).abs().max())


@pytest.mark.parametrize("norm", [1, 2])
def test_magnitude_keeps_the_largest_neurons(norm):
    model = build_tiny("tiny-llama")
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[:10] *= 100  # neurons 0-9 are the largest
    masks = method("magnitude", model, ["prune.sparsity=0.5", f"magnitude.norm={norm}",
                                        "prune.structures=[heads,neurons,hidden]"])
    assert masks.neurons["layers.0.ffn"][:10].tolist() == [1.0] * 10
    assert int(masks.neurons["layers.0.ffn"].sum()) == 48 and int(masks.hidden.sum()) == 32
    assert masked_minus_removed(model, masks) <= 1e-4


def test_magnitude_on_an_encoder():
    model = build_tiny("tiny-bert")
    masks = method("magnitude", model, ["prune.sparsity=0.5", "prune.structures=[heads,layers]"])
    assert all(int(m.sum()) == 2 for m in masks.heads.values())
    assert sum(float(m) for m in masks.layers.values()) == 1


def test_block_influence_drops_a_layer_that_does_nothing():
    config = tiny_config("tiny-llama")
    config.num_hidden_layers = 3
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # layer 1 adds nothing to the residual stream
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()
    masks = method("block-influence", model, ["prune.sparsity=0.34"], calibration())
    assert {k: float(v) for k, v in masks.layers.items()} == \
        {"layers.0": 1.0, "layers.1": 0.0, "layers.2": 1.0}
    assert masked_minus_removed(model, masks) <= 1e-4
    assert len(model.model.layers) == 2


def test_block_influence_needs_calibration():
    with pytest.raises(LmpruneError, match="needs calibration data"):
        method("block-influence", build_tiny("tiny-llama"), ["prune.sparsity=0.5"])


def test_magnitude_sparsity_that_empties_a_site():
    with pytest.raises(LmpruneError, match="would leave zero units"):
        method("magnitude", build_tiny("tiny-bert"), ["prune.sparsity=0.9",
                                                      "prune.structures=[heads]"])
