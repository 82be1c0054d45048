"""Magnitude scores of hand-set weights, checked against closed forms."""
from __future__ import annotations

import pytest
import torch

from lmprune.arch import describe
from lmprune.errors import LmpruneError
from lmprune.scorers.magnitude import magnitude_scores

from scorer_toys import one_layer_llama

# tiny-llama, one layer: hidden 64, 8 query heads of 8 dims over 2 kv groups, FFN 96, vocab 128


@pytest.fixture(scope="module")
def model():
    model = one_layer_llama(num_kv_heads=2)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
        model.model.layers[0].mlp.gate_proj.weight[3] = 2.0  # neuron 3's gate row
        model.model.layers[0].self_attn.o_proj.weight[:, 8:16] = -3.0  # head 1's o columns
    return model


@pytest.mark.parametrize("p", [1, 2])
def test_closed_form_norms(model, p):
    scores = magnitude_scores(model, describe(model), norm=p)

    def norm(*counts_values):
        return sum(n * abs(v) ** p for n, v in counts_values) ** (1 / p)

    neurons = scores.neurons["layers.0.ffn"]
    assert float(neurons[0]) == pytest.approx(norm((3 * 64, 1)))  # gate row, up row, down column
    assert float(neurons[3]) == pytest.approx(norm((64, 2), (2 * 64, 1)))
    heads = scores.heads["layers.0.attn"]  # q rows (8 x 64) and o columns (64 x 8)
    assert float(heads[0]) == pytest.approx(norm((2 * 512, 1)))
    assert float(heads[1]) == pytest.approx(norm((512, 1), (512, 3)))
    kv = scores.kv_groups["layers.0.attn"]  # q rows of 4 heads, k and v rows, o columns of 4 heads
    assert float(kv[1]) == pytest.approx(norm((4 * 512 * 2 + 2 * 512, 1)))
    # hidden channel: embedding column (128), q/k/v/gate/up/lm_head columns (64+16+16+96+96+128),
    # o and down rows (64 + 96, with head 1's 8 o entries at -3), 3 norms; the gate column
    # holds neuron 3's 2
    ones = 128 + 64 + 16 + 16 + (96 - 1) + 96 + 128 + (64 - 8) + 96 + 3
    assert scores.hidden.tolist() == pytest.approx([norm((ones, 1), (8, 3), (1, 2))] * 64)
    ones = 64 * 64 + 2 * 16 * 64 + 64 * 56 + 3 * 96 * 64 + 2 * 64 - 64  # q k v o g u d, 2 norms
    layer = norm((ones, 1), (64 * 8, 3), (64, 2))
    assert scores.layers["layers.0"] == pytest.approx(layer)
    assert scores.ffn["layers.0.ffn"] == pytest.approx(norm((3 * 96 * 64 + 64 - 64, 1), (64, 2)))


def test_norm_must_be_one_or_two(model):
    with pytest.raises(LmpruneError, match="1 or 2"):
        magnitude_scores(model, describe(model), norm=3)


def test_no_gradient_is_involved(model):
    magnitude_scores(model, describe(model))
    assert all(p.grad is None for p in model.parameters())
