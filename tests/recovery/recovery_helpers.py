"""Helpers for the recovery tests: tiny data, fast settings, a pruned tiny-llama."""
from __future__ import annotations

import torch

from lmprune.arch import describe
from lmprune.config import load_config
from lmprune.structures import Masks, remove
from lmprune.structures.plan import PruningPlan
from lmprune.zoo import build_tiny

# A tiny repeated instruction set: short enough for a few fast steps, varied enough to learn.
ROWS = [
    {"instruction": "Say hi.", "input": "", "output": "Hello there!"},
    {"instruction": "Count", "input": "to three", "output": "one two three"},
    {"instruction": "Name a color", "input": "", "output": "blue"},
    {"instruction": "Reverse", "input": "abc", "output": "cba"},
] * 4

# Fast settings for tests: short prompts, no warmup, two examples per forward pass.
FAST = dict(template="plain", warmup_steps=0, micro_batch=2, progress=False)


def tiny_run(*overrides: str):
    """A RunConfig for quick recoveries of the tiny model (no dropout unless overridden)."""
    return load_config(None, ["recovery.max_len=64", "recovery.batch_size=4", "recovery.lr=5e-3",
                              "recovery.dropout=0", "recovery.max_steps=4", *overrides])


def pruned_tiny(remove_attention=("layers.0.attn",)):
    """tiny-llama with these attention sublayers removed and 20 neurons of layer 1 gone."""
    model = build_tiny("tiny-llama", "causal-lm")
    structure = describe(model)
    masks = Masks.ones(structure, ("neurons", "attention"))
    for name in remove_attention:
        masks.attention[name] = torch.zeros(())
    masks.neurons["layers.1.ffn"][:20] = 0
    plan = PruningPlan.from_masks(structure, masks, {"method": "manual"})
    remove(model, masks, structure)
    return model.eval(), plan


def logits(model, text: str, tokenizer) -> torch.Tensor:
    batch = tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
