"""ShortGPT (Men et al., 2024): remove the layers with the lowest block influence.

Always prunes whole layers (``prune.structures`` is not used): the layers inside
``prune.layer_range`` (default: all) whose output is most similar to their input, as many as
``prune.sparsity`` allows (of the non-embedding parameters with ``prune.budget=params``, of
the layers with ``units``).
"""
from __future__ import annotations

from lmprune.arch import ModelStructure
from lmprune.pruners._budget import calibration_samples
from lmprune.pruners.settings import check_settings, prune_settings, select_masks
from lmprune.registry import METHODS
from lmprune.structures import Masks


@METHODS.register("block-influence", help="ShortGPT: drop the layers whose output is closest "
                                          "to their input (whole layers; needs calibration)")
def prune_block_influence(model, structure: ModelStructure, run, calibration=None) -> Masks:
    """Masks removing the layers with the lowest block influence."""
    from lmprune.scorers.block_influence import block_influence_scores

    samples = calibration_samples(calibration, "block-influence")
    settings = prune_settings(run, structure, ["layers"])
    check_settings(structure, settings)
    scores = block_influence_scores(model, structure, samples)
    return select_masks(model, structure, scores, settings)
