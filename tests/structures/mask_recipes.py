"""Shared fixtures for structure tests: tiny models, inputs, and random mask recipes."""
from __future__ import annotations

import torch

from lmprune.arch import describe
from lmprune.structures import Masks
from lmprune.zoo import build_tiny

TINY = ["tiny-bert", "tiny-roberta", "tiny-mpnet", "tiny-t5", "tiny-t5-gated", "tiny-llama", "tiny-qwen2", "tiny-mistral"]


def inputs_for(model, batch: int = 2, seq: int = 12, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (batch, seq), generator=g)
    attention_mask = torch.ones_like(ids)
    attention_mask[1, -3:] = 0  # padding in the second row
    out = {"input_ids": ids, "attention_mask": attention_mask}
    if model.config.model_type == "t5":
        out["decoder_input_ids"] = torch.randint(3, vocab, (batch, 5), generator=g)
    return out


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def random_binary(n: int, keep_prob: float, g: torch.Generator, at_least: int = 1) -> torch.Tensor:
    mask = (torch.rand(n, generator=g) < keep_prob).float()
    if mask.sum() < at_least:
        mask[torch.randperm(n, generator=g)[:at_least]] = 1.0
    return mask


def random_masks(structure, kinds, seed: int = 0, keep_prob: float = 0.6) -> Masks:
    """Random binary masks that removal can realise (equal query heads per kv group)."""
    g = torch.Generator().manual_seed(seed)
    masks = Masks.ones(structure, kinds)
    for site in structure.attention:
        if "heads" in kinds:
            if site.group_size > 1:
                keep = int(torch.randint(1, site.group_size + 1, (1,), generator=g))
                head = torch.zeros(site.num_heads)
                for group in range(site.num_kv_heads):
                    chosen = torch.randperm(site.group_size, generator=g)[:keep] + group * site.group_size
                    head[chosen] = 1.0
                masks.heads[site.name] = head
            else:
                masks.heads[site.name] = random_binary(site.num_heads, keep_prob, g)
        if "kv_groups" in kinds and site.name in masks.kv_groups:
            masks.kv_groups[site.name] = random_binary(site.num_kv_heads, keep_prob, g)
    for site in structure.ffn:
        if "neurons" in kinds:
            masks.neurons[site.name] = random_binary(site.width, keep_prob, g)
    if "hidden" in kinds:
        masks.hidden = random_binary(structure.hidden.size, 0.75, g)
    for kind, sites in (("attention", structure.attention), ("ffn", structure.ffn)):
        if kind in kinds:
            for site in sites:
                getattr(masks, kind)[site.name] = torch.tensor(float(torch.rand(1, generator=g) > 0.4))
            # keep the first layer's sublayers: removing every head is an error, tested apart
            getattr(masks, kind)[sites[0].name] = torch.tensor(1.0)
    if "layers" in kinds:
        names = [layer.name for layer in structure.layers]
        masks.layers = {name: torch.tensor(1.0) for name in names}
        masks.layers[names[int(torch.randint(1, len(names), (1,), generator=g))]] = torch.tensor(0.0)
    return masks


def fresh(name: str, seed: int = 0):
    model = build_tiny(name, seed=seed)
    return model.eval(), describe(model)
