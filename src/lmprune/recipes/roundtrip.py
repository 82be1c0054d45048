"""Prune -> check masked == removed -> save -> reload -> check again, for one model.

The foundation demo runs this on the offline models; it is also the quickest end-to-end
check that an architecture is fully supported (masks, removal, export, reload).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lmprune.arch import describe
from lmprune.config.schema import PruneConfig, RunConfig
from lmprune.device import resolve_device
from lmprune.pruners.random import prune_random
from lmprune.structures import apply_masks, remove
from lmprune.structures.counting import count_parameters
from lmprune.structures.export import load_pretrained, save_pretrained
from lmprune.structures.plan import PruningPlan
from lmprune.zoo import load_model

SAMPLE_TEXT = {
    "bert": ["This coffee is great, I would buy it again.",
             "The cookies arrived stale and broken."],
    "llama": ["It is a truth universally acknowledged, that a single man in possession of a good "
              "fortune, must be in want of a wife."],
}


@dataclass
class RoundTrip:
    model: str
    params_before: int
    params_after: int
    body_before: int
    body_after: int
    masked_vs_removed: float  # max |logit difference| in float64, masked vs physically pruned
    reload_diff: float  # max |logit difference|, pruned model vs reloaded from disk
    save_format: str
    path: str
    seconds: float

    @property
    def reload_ok(self) -> bool:
        return self.reload_diff <= 1e-4

    @property
    def equivalent(self) -> bool:
        return self.masked_vs_removed <= 1e-9


def _inputs(loaded, family: str) -> dict:
    texts = SAMPLE_TEXT.get(family, SAMPLE_TEXT["llama"])
    batch = loaded.tokenizer(texts, return_tensors="pt", padding=True)
    return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def _logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits.double()


def run_roundtrip(name: str, out_dir: Path, sparsity: float = 0.3, seed: int = 0,
                  structures=("heads", "neurons"), overwrite: bool = True,
                  device: str = "auto") -> RoundTrip:
    """Randomly prune model ``name`` at ``sparsity``, save to ``out_dir/name`` and reload."""
    start = time.perf_counter()
    where = resolve_device(device)
    loaded = load_model(name)
    model, structure = loaded.model.to(where).eval(), describe(loaded.model)
    before = count_parameters(model, structure)
    run = RunConfig(prune=PruneConfig(method="random", sparsity=sparsity,
                                       structures=list(structures), seed=seed))
    masks = prune_random(model, structure, run)
    inputs = {k: v.to(where) for k, v in _inputs(loaded, structure.family).items()}
    # The equivalence check runs in float64, where masked and removed agree exactly; in
    # float32 they differ by summation-order rounding (~1e-5 of the logit scale).
    model.double()
    with apply_masks(model, masks, structure):
        masked = _logits(model, inputs)
    plan = PruningPlan.from_masks(structure, masks, {"method": "random", "sparsity": sparsity,
                                                     "seed": seed, "model": name})
    remove(model, masks, structure)
    exact = _logits(model, inputs)
    model.float()
    pruned = _logits(model, inputs)
    after = count_parameters(model)
    result = save_pretrained(model, Path(out_dir) / name, tokenizer=loaded.tokenizer, plan=plan,
                             overwrite=overwrite)
    reloaded = _logits(load_pretrained(result.path).to(where), inputs)
    return RoundTrip(name, before.total, after.total, before.body, after.body,
                     float((masked - exact).abs().max()), float((pruned - reloaded).abs().max()),
                     result.format, str(result.path), time.perf_counter() - start)
