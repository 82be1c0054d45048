"""Cached decoding equals a full forward after every kind of removal, on every generative
architecture: a prefix with a KV cache, then tokens one at a time, give the logits the whole
sequence gives at once. Layer 0 matters most: generation reads the cache length there."""
from __future__ import annotations

import pytest
import torch

from lmprune import load_pretrained
from lmprune.structures import Masks, remove
from lmprune.structures.export import save_pretrained
from lmprune.structures.kv_cache import cache_arguments, output_cache

from mask_recipes import fresh, random_masks

pytestmark = pytest.mark.usefixtures("one_thread")

GENERATIVE = ["tiny-llama", "tiny-qwen2", "tiny-mistral", "tiny-t5", "tiny-t5-gated"]
SCENARIOS = ["heads", "kv_groups", "neurons", "hidden", "attention-0", "ffn-0", "layer-0",
             "everything"]
EVERYTHING = ("heads", "kv_groups", "neurons", "hidden", "attention", "ffn", "layers")


def scenario_masks(structure, scenario: str) -> Masks:
    if scenario == "everything":
        return random_masks(structure, EVERYTHING, seed=3)
    if scenario in ("attention-0", "ffn-0", "layer-0"):
        kind = {"attention-0": "attention", "ffn-0": "ffn", "layer-0": "layers"}[scenario]
        masks = Masks.ones(structure, (kind,))
        sites = {"attention": structure.attention, "ffn": structure.ffn,
                 "layers": structure.layers}[kind]
        for site in sites:  # layer 0 of every stack (T5: encoder and decoder; self and cross)
            layer = getattr(site, "layer", site.name)
            if layer.split(".")[-1] == "0":
                getattr(masks, kind)[site.name] = torch.tensor(0.0)
        return masks
    return random_masks(structure, (scenario,), seed=1)


def _ids(model, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, model.config.vocab_size, (2, n), generator=g)


def stepwise_logits(model, ids: torch.Tensor, prefix: int, encoder_ids=None) -> torch.Tensor:
    """Logits of ``ids[:, prefix:]`` computed with a cache: the prefix at once, then one
    token per call (for T5, ``ids`` are decoder ids and the encoder runs once)."""
    extra = {}
    if encoder_ids is not None:
        extra["encoder_outputs"] = model.get_encoder()(input_ids=encoder_ids)
    key = "decoder_input_ids" if encoder_ids is not None else "input_ids"
    out = model(**{key: ids[:, :prefix]}, use_cache=True, **extra)
    cache, steps = output_cache(out), []
    for t in range(prefix, ids.shape[1]):
        out = model(**{key: ids[:, t:t + 1]}, **cache_arguments(model, cache), **extra)
        cache = output_cache(out)
        steps.append(out.logits[:, -1])
    assert cache.get_seq_length() == ids.shape[1]
    return torch.stack(steps, dim=1)


def check_cached_decoding(model) -> float:
    t5 = model.config.model_type == "t5"
    ids = _ids(model, 9, seed=0)
    encoder_ids = _ids(model, 7, seed=1) if t5 else None
    with torch.no_grad():
        if t5:
            full = model(input_ids=encoder_ids, decoder_input_ids=ids, use_cache=False).logits
        else:
            full = model(input_ids=ids, use_cache=False).logits
        steps = stepwise_logits(model, ids, prefix=4, encoder_ids=encoder_ids)
    return (steps - full[:, 4:]).abs().max().item()


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("name", GENERATIVE)
def test_cached_steps_equal_full_forward(name, scenario, tmp_path):
    model, structure = fresh(name)
    if scenario == "kv_groups" and not structure.attention[0].group_size > 1:
        pytest.skip("multi-head attention: key/value groups are the heads themselves")
    model.to(torch.float64)
    remove(model, scenario_masks(structure, scenario), structure)
    assert check_cached_decoding(model) <= 1e-9, "in memory"
    save_pretrained(model, tmp_path / "m")  # the saved stand-ins and hooks behave the same
    assert check_cached_decoding(load_pretrained(tmp_path / "m").double()) <= 1e-9, "reloaded"


@pytest.mark.parametrize("name", GENERATIVE)
def test_dense_model_passes_the_same_check(name):
    """The check itself holds on the untouched model (so a failure above is the pruning's)."""
    model, _ = fresh(name)
    assert check_cached_decoding(model.double()) <= 1e-9
