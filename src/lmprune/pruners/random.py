"""Random pruning: a baseline, and the quickest way to exercise the whole pipeline."""
from __future__ import annotations

import torch

from lmprune.arch import ModelStructure
from lmprune.pruners.selection import Scores
from lmprune.pruners.settings import prune_settings, select_masks
from lmprune.registry import METHODS
from lmprune.structures import Masks


def random_scores(structure: ModelStructure, seed: int = 0) -> Scores:
    """Uniform random scores for every unit (seeded, independent of the global RNG)."""
    g = torch.Generator().manual_seed(seed)

    def draw(n: int) -> torch.Tensor:
        return torch.rand(n, generator=g)

    scores = Scores(hidden=draw(structure.hidden.size))
    for site in structure.attention:
        scores.heads[site.name] = draw(site.num_heads)
        scores.kv_groups[site.name] = draw(site.num_kv_heads)
        scores.attention[site.name] = float(draw(1))
    for site in structure.ffn:
        scores.neurons[site.name] = draw(site.width)
        scores.ffn[site.name] = float(draw(1))
    for layer in structure.layers:
        scores.layers[layer.name] = float(draw(1))
    return scores


@METHODS.register("random", help="random scores: a baseline (LLM-Pruner's 'random' row)")
def prune_random(model, structure: ModelStructure, run, calibration=None) -> Masks:
    """Masks that keep a random subset of each requested structure kind."""
    scores = random_scores(structure, run.prune.seed)
    return select_masks(model, structure, scores, prune_settings(run, structure))
