"""Finishing a sublayer search on an exact parameter budget with FFN neurons.

Whole sublayers are coarse (SmolLM2-135M: an attention sublayer is 0.83% of the body, an FFN
sublayer 2.5%), so a search that stops at the first removal reaching the target overshoots
by up to one sublayer (21.7% for a 20% target). With ``sublayer.finish=neurons`` the search
instead stops before the removal that would overshoot by more than the tolerance, and the
remaining parameters are removed as FFN neurons of the FFN sublayers still present (within
the candidate layers): spread evenly over those sublayers in chunks of the hardware-friendly
multiple (they differ by at most one chunk, and every width stays aligned), and at each the
neurons with the lowest first-order Taylor importance (LLM-Pruner's element-wise criterion) on
the same windows, measured on the model with the chosen sublayers already removed.
"""
from __future__ import annotations

import torch
from torch import nn

from lmprune.arch import ModelStructure
from lmprune.pruners.selection import in_range
from lmprune.structures import Masks, apply_masks
from lmprune.structures.alignment import rounding_for
from lmprune.structures.counting import neuron_cost


def finish_with_neurons(model: nn.Module, structure: ModelStructure, windows: torch.Tensor,
                        removed: dict[str, str], base: Masks, remainder: float,
                        layer_range: list[int] | None = None,
                        progress: bool = True, round_to: int | str = "auto"
                        ) -> tuple[Masks, dict]:
    """``base`` plus neuron masks removing about ``remainder`` more parameters.

    Neurons go in chunks of ``round_to`` per site (``auto``: the hardware-friendly multiple of
    :mod:`lmprune.structures.alignment` for the sites' width, 32 for SmolLM2's 1536), so every
    finished width stays aligned; the total is rounded to whole chunks (the budget is met
    within half a chunk per model). Returns the masks and a record: ``params`` removed as
    neurons, ``neurons`` per site.
    """
    from lmprune.scorers.taylor import taylor_scores

    sites = [s for s in structure.ffn if s.name not in removed and in_range(s.layer, layer_range)]
    if remainder <= 0 or not sites:
        return base, {"params": 0, "neurons": {}}
    costs = {s.name: neuron_cost(model, s) for s in sites}
    chunk = min(rounding_for(round_to, "neurons", s.width) for s in sites)
    total = max(0, round(remainder / (sum(costs.values()) / len(sites)) / chunk))  # chunks
    with apply_masks(model, base, structure):
        scores = taylor_scores(model, structure, windows, "element1", kinds=("neurons",),
                               layer_range=layer_range, progress=progress)
    masks = Masks(**{k: dict(getattr(base, k)) for k in ("heads", "kv_groups", "neurons",
                                                         "attention", "ffn", "layers")},
                  hidden=base.hidden)
    record, params = {}, 0
    for i, site in enumerate(sites):
        count = (total * (i + 1) // len(sites) - total * i // len(sites)) * chunk
        count = min(count, (site.width - 1) // chunk * chunk)
        mask = torch.ones(site.width)
        mask[scores.neurons[site.name].argsort(stable=True)[:count]] = 0.0
        masks.neurons[site.name] = mask
        record[site.name] = count
        params += count * costs[site.name]
    return masks, {"params": params, "neurons": record}
