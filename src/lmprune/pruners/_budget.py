"""Checks shared by the score-based methods: calibration present, budget realisable.

``select`` never keeps zero units (``keep_count`` keeps at least one), so a sparsity that
would empty a site is turned into an explicit error here instead of silently keeping one unit.
"""
from __future__ import annotations

import torch

from lmprune.arch import ModelStructure
from lmprune.errors import LmpruneError
from lmprune.pruners.selection import in_range


def calibration_samples(calibration, method: str) -> torch.Tensor:
    """The calibration token windows, or an error saying how to provide them."""
    samples = getattr(calibration, "samples", None)
    if samples is None or len(samples) == 0:
        raise LmpruneError(f"method {method!r} needs calibration data (token windows) and got "
                           f"none; build it with lmprune.data.calibration.build_calibration("
                           f"tokenizer, dataset=run.data.calibration, "
                           f"num_samples=run.data.num_samples, seq_len=run.data.seq_len)")
    return samples


def layers_in_range(structure: ModelStructure, layer_range: list[int] | None) -> list[str]:
    """Names of the layers inside ``layer_range``; an error when there are none."""
    names = [layer.name for layer in structure.layers if in_range(layer.name, layer_range)]
    if not names:
        indices = sorted({layer.index for layer in structure.layers})
        raise LmpruneError(f"prune.layer_range {layer_range} selects none of the model's "
                           f"{len(structure.layers)} layers (indices {indices[0]}..{indices[-1]}); "
                           f"set a range inside them or null for all layers")
    return names


def check_budget(structure: ModelStructure, structures: list[str], sparsity: float,
                 layer_range: list[int] | None = None) -> None:
    """Raise when ``sparsity`` cannot be realised: an empty layer range, or a site of a
    requested kind that would keep zero units."""
    if not 0.0 <= sparsity < 1.0:
        raise LmpruneError(f"prune.sparsity must be in [0, 1), got {sparsity}")
    layers_in_range(structure, layer_range)
    sizes = []  # (what, units)
    for site in structure.attention:
        if not in_range(site.layer, layer_range):
            continue
        if "heads" in structures:
            per = "query heads per key/value group" if site.group_size > 1 else "heads"
            sizes.append((f"{site.name} ({per})", site.group_size if site.group_size > 1
                          else site.num_heads))
        if "kv_groups" in structures and site.group_size > 1:
            sizes.append((f"{site.name} (key/value groups)", site.num_kv_heads))
    for site in structure.ffn:
        if "neurons" in structures and in_range(site.layer, layer_range):
            sizes.append((f"{site.name} (neurons)", site.width))
    if "hidden" in structures:
        sizes.append(("the hidden channels", structure.hidden.size))
    for what, units in sizes:
        if round((1.0 - sparsity) * units) < 1:
            limit = 1.0 - 0.5 / units
            raise LmpruneError(f"prune.sparsity={sparsity} would leave zero units in {what}: "
                               f"{units} units x (1 - {sparsity}) rounds to 0; use a sparsity "
                               f"below {limit:.3f} (or prune another kind)")
