"""LLM-Pruner (Ma et al., NeurIPS 2023): Taylor importance, then uniform per-site selection.

``run.taylor.mode`` picks the structures, as in LLM-Pruner's three settings:

* ``block``: query heads (the same number in every key/value group), whole key/value
  groups (LLM-Pruner's GQA mode, ``kv_groups``) and FFN neurons of every layer inside
  ``prune.layer_range`` (``prune.round_to`` keeps the widths aligned). The default
  ``layer_range: auto`` keeps LLM-Pruner's first 1/8 and last 1/16 of the layers (its
  LLaMA-7B recipe prunes layers 4..29 of 32), i.e. layers 4..27 of a 30-layer model.
* ``channel``: the hidden (residual) channels, across the whole model.
* ``layer``: whole layers — the ``sparsity`` fraction of the layers in ``layer_range`` with the
  lowest importance (aggregated over all of a layer's weights) are removed.

In ``channel`` and ``layer`` mode the kind is fixed by the mode and ``prune.structures`` is
not used. ``prune.budget=params`` (default) removes ``prune.sparsity`` of the non-embedding
parameters (:mod:`lmprune.pruners.param_budget`). Importance, aggregation, reduction and
micro-batching come from ``run.taylor`` (see :mod:`lmprune.scorers.taylor`); gradients come
from ``calibration.samples``.
"""
from __future__ import annotations

from lmprune.arch import ModelStructure
from lmprune.errors import LmpruneError
from lmprune.pruners._budget import calibration_samples
from lmprune.pruners.settings import (PruneSettings, check_settings, prune_settings,
                                      select_masks)
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


def taylor_options(run, settings: PruneSettings) -> dict:
    """Keyword arguments of ``taylor_metrics`` from ``run.taylor`` and the settings."""
    taylor = run.taylor
    return {"aggregation": taylor.aggregation, "kinds": settings.structures,
            "layer_range": settings.layer_range, "reduction": taylor.reduction,
            "batch_size": taylor.batch_size, "buffer_fraction": taylor.buffer_fraction}


@METHODS.register("taylor", help="LLM-Pruner: Taylor importance from calibration gradients "
                                 "(taylor.mode: block heads/neurons, channel, layer)")
def prune_taylor(model, structure: ModelStructure, run, calibration=None) -> Masks:
    """Masks keeping the units with the highest Taylor importance."""
    from lmprune.scorers.taylor import taylor_scores

    samples = calibration_samples(calibration, "taylor")
    settings = prune_settings(run, structure, mode_structures(run.taylor.mode,
                                                              list(run.prune.structures)))
    check_settings(structure, settings)
    scores = taylor_scores(model, structure, samples, importance=run.taylor.importance,
                           **taylor_options(run, settings))
    return select_masks(model, structure, scores, settings)
