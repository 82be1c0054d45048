"""Block influence: 1 - cos(input, output) of each layer, averaged over tokens."""
from __future__ import annotations

import pytest
import torch

from lmprune.arch import describe
from lmprune.errors import LmpruneError
from lmprune.scorers.block_influence import block_influence_scores
from lmprune.structures import Masks, apply_masks
from lmprune.zoo import build_tiny

from scorer_toys import one_layer_llama, token_samples


def test_matches_the_hidden_states_of_the_model():
    model = one_layer_llama(layers=3)
    samples = token_samples(3, 12)
    scores = block_influence_scores(model, describe(model), samples, batch_size=2, progress=False)
    with torch.no_grad():
        states = model(input_ids=samples, output_hidden_states=True).hidden_states
    for i in (0, 1):  # hidden_states[i] enters layer i (the last entry is after the final norm)
        cos = torch.nn.functional.cosine_similarity(states[i], states[i + 1], dim=-1)
        assert scores.layers[f"layers.{i}"] == pytest.approx(float((1 - cos).mean()), rel=1e-5)
    assert all(0 < v < 2 for v in scores.layers.values())


def test_a_layer_that_passes_its_input_through_has_zero_influence():
    model = one_layer_llama(layers=2)
    structure = describe(model)
    masks = Masks(layers={"layers.1": torch.tensor(0.0)})  # both sublayers add nothing
    with apply_masks(model, masks, structure):
        scores = block_influence_scores(model, structure, token_samples(2, 10), progress=False)
    assert scores.layers["layers.1"] == pytest.approx(0.0, abs=1e-6)
    assert scores.layers["layers.0"] > 1e-3


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-t5"])
def test_other_families(name):
    model = build_tiny(name)
    structure = describe(model)
    samples = token_samples(2, 8, vocab=100)
    scores = block_influence_scores(model, structure, samples, progress=False)
    assert set(scores.layers) == {layer.name for layer in structure.layers}
    assert all(0 < v < 2 for v in scores.layers.values())


def test_samples_must_be_token_windows():
    model = one_layer_llama()
    with pytest.raises(LmpruneError, match=r"\[N, L\]"):
        block_influence_scores(model, describe(model), torch.ones(4, dtype=torch.long))
