"""ShortGPT (Men et al., 2024): remove the layers with the lowest block influence.

Always prunes whole layers (``prune.structures`` is not used): the ``prune.sparsity`` fraction
of the layers inside ``prune.layer_range`` whose output is most similar to their input.
"""
from __future__ import annotations

from lmprune.arch import ModelStructure
from lmprune.pruners._budget import calibration_samples, check_budget
from lmprune.pruners.selection import select
from lmprune.registry import METHODS
from lmprune.structures import Masks


@METHODS.register("block-influence", help="ShortGPT: drop the layers whose output is closest "
                                          "to their input (whole layers; needs calibration)")
def prune_block_influence(model, structure: ModelStructure, run, calibration=None) -> Masks:
    """Masks removing the layers with the lowest block influence."""
    from lmprune.scorers.block_influence import block_influence_scores

    samples = calibration_samples(calibration, "block-influence")
    prune = run.prune
    check_budget(structure, ["layers"], prune.sparsity, prune.layer_range)
    scores = block_influence_scores(model, structure, samples)
    return select(structure, scores, prune.sparsity, ["layers"], prune.round_to,
                  prune.layer_range)
