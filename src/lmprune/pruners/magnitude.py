"""Weight magnitude: keep the groups with the largest Lp norm (LLM-Pruner's l1/l2 baselines)."""
from __future__ import annotations

from lmprune.arch import ModelStructure
from lmprune.pruners.settings import check_settings, prune_settings, select_masks
from lmprune.registry import METHODS
from lmprune.structures import Masks


@METHODS.register("magnitude", help="Lp norm of each group's weights (magnitude.norm); "
                                    "no data needed")
def prune_magnitude(model, structure: ModelStructure, run, calibration=None) -> Masks:
    """Masks keeping the groups of ``prune.structures`` with the largest weight norms."""
    from lmprune.scorers.magnitude import magnitude_scores

    settings = prune_settings(run, structure)
    check_settings(structure, settings)
    scores = magnitude_scores(model, structure, run.magnitude.norm, kinds=settings.structures,
                              layer_range=settings.layer_range)
    return select_masks(model, structure, scores, settings)
