"""LLM-Pruner (Ma et al., NeurIPS 2023): Taylor importance, then uniform per-site selection.

``run.taylor.mode`` picks the structures, as in LLM-Pruner's three settings:

* ``block``: attention heads (or key/value groups, if ``prune.structures`` lists
  ``kv_groups``) and FFN neurons of every layer inside ``prune.layer_range``, each site at
  ``prune.sparsity`` (``prune.round_to`` keeps the widths aligned). LLM-Pruner's LLaMA-7B recipe
  prunes only layers 4..29 of 32 (``--block_*_layer_start 4 --block_*_layer_end 30``: the
  first 4 and the last 2 layers are kept); lmprune's default ``layer_range: null`` prunes
  every layer: set ``prune.layer_range=[4,30]`` to follow LLM-Pruner on a 32-layer model.
* ``channel``: the hidden (residual) channels, across the whole model.
* ``layer``: whole layers — the ``sparsity`` fraction of the layers in ``layer_range`` with the
  lowest importance (aggregated over all of a layer's weights) are removed.

In ``channel`` and ``layer`` mode the kind is fixed by the mode and ``prune.structures`` is
not used. Importance and aggregation come from ``run.taylor`` (see
:mod:`lmprune.scorers.taylor`); gradients come from ``calibration.samples``.
"""
from __future__ import annotations

from lmprune.arch import ModelStructure
from lmprune.errors import LmpruneError
from lmprune.pruners._budget import calibration_samples, check_budget
from lmprune.pruners.selection import select
from lmprune.registry import METHODS
from lmprune.structures import Masks

BLOCK_KINDS = ("heads", "kv_groups", "neurons")


def mode_structures(mode: str, structures: list[str]) -> list[str]:
    """The structure kinds ``taylor.mode`` prunes."""
    if mode == "channel":
        return ["hidden"]
    if mode == "layer":
        return ["layers"]
    if mode != "block":
        raise LmpruneError(f"unknown taylor.mode {mode!r}; valid: block, channel, layer")
    chosen = [s for s in structures if s in BLOCK_KINDS]
    others = [s for s in structures if s not in BLOCK_KINDS]
    if others or not chosen:
        raise LmpruneError(
            f"taylor.mode=block prunes heads, kv_groups and neurons, but prune.structures is "
            f"{list(structures)}; list only those kinds, or use taylor.mode=channel (hidden "
            f"channels) or taylor.mode=layer (whole layers)")
    return chosen


@METHODS.register("taylor", help="LLM-Pruner: Taylor importance from calibration gradients "
                                 "(taylor.mode: block heads/neurons, channel, layer)")
def prune_taylor(model, structure: ModelStructure, run, calibration=None) -> Masks:
    """Masks keeping the units with the highest Taylor importance."""
    from lmprune.scorers.taylor import taylor_scores

    samples = calibration_samples(calibration, "taylor")
    prune, taylor = run.prune, run.taylor
    structures = mode_structures(taylor.mode, list(prune.structures))
    check_budget(structure, structures, prune.sparsity, prune.layer_range)
    scores = taylor_scores(model, structure, samples, importance=taylor.importance,
                           aggregation=taylor.aggregation, kinds=structures,
                           layer_range=prune.layer_range)
    return select(structure, scores, prune.sparsity, structures, prune.round_to,
                  prune.layer_range)
