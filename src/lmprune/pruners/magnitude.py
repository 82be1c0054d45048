"""Weight magnitude: keep the groups with the largest Lp norm (LLM-Pruner's l1/l2 baselines)."""
from __future__ import annotations

from lmprune.arch import ModelStructure
from lmprune.pruners._budget import check_budget
from lmprune.pruners.selection import select
from lmprune.registry import METHODS
from lmprune.structures import Masks


@METHODS.register("magnitude", help="Lp norm of each group's weights (magnitude.norm); "
                                    "no data needed")
def prune_magnitude(model, structure: ModelStructure, run, calibration=None) -> Masks:
    """Masks keeping the groups of ``prune.structures`` with the largest weight norms."""
    from lmprune.scorers.magnitude import magnitude_scores

    prune = run.prune
    structures = list(prune.structures)
    check_budget(structure, structures, prune.sparsity, prune.layer_range)
    scores = magnitude_scores(model, structure, run.magnitude.norm, kinds=structures,
                              layer_range=prune.layer_range)
    return select(structure, scores, prune.sparsity, structures, prune.round_to,
                  prune.layer_range)
