"""Hardware-friendly widths: what ``prune.round_to: auto`` rounds to, and the export check.

GPU matrix multiplies run on tensor cores only when the inner and outer dimensions are
multiples of 8 (16 bytes of bf16); below that the library falls back to slow kernels, and
between multiples of 8 and of the kernels' tile widths (64-256) some of every tile is wasted.
A RoBERTa-base FFN pruned to 1229 neurons ran at 0.64-0.77x of dense on an H200 while 1232
ran at 1.94x (issue #13); LLaMA-7B's 8806-wide FFN decoded at 0.83x of dense, 8832 at 1.00x.

**The rule** (``prune.round_to: auto``): a width of ``n`` columns is rounded to the nearest
multiple of the largest ``m`` in (64, 32, 16, 8) with ``n >= 32 m`` — 64 from 2048 columns,
32 from 1024, 16 from 512, 8 from 256; narrower widths (tiny test models) are left exact.
So rounding moves a width by at most ``m / 2 <= n / 64`` columns: **each site keeps its
requested share within 1/64 (1.6%) of its width**, and the model's non-embedding parameter
share moves by less than that (the run report prints the share actually removed).

Widths are counted in matrix columns: FFN neurons and hidden channels are one column each;
a head (or a key/value group) is ``head_dim`` (or ``group_size * head_dim``) columns, so head
counts need no rounding when ``head_dim`` is itself a multiple of ``m`` (every supported real
model: 64 or 128) — ``unit_multiple`` divides out what the unit already provides.
"""
from __future__ import annotations

import math
import warnings

from torch import nn

from lmprune.arch import ModelStructure, describe
from lmprune.errors import LmpruneError

STEPS = (64, 32, 16, 8)
UNITS_PER_STEP = 32  # m is used only for widths >= 32 m: rounding error <= 1/64 of the width
TENSOR_CORE_MULTIPLE = 8
CHECKED_FROM = TENSOR_CORE_MULTIPLE * UNITS_PER_STEP  # narrower widths are never flagged


class UnalignedWidthWarning(UserWarning):
    """An exported width that is not a multiple of 8: slow GEMMs on GPUs."""


def column_multiple(columns: int) -> int:
    """The multiple a width of ``columns`` matrix columns is rounded to (module docstring)."""
    for step in STEPS:
        if columns >= UNITS_PER_STEP * step:
            return step
    return 1


def unit_multiple(units: int, unit_columns: int = 1) -> int:
    """Multiple of *units* (heads, groups, neurons) that keeps their columns aligned."""
    step = column_multiple(units * unit_columns)
    return step // math.gcd(step, unit_columns)


def rounding_for(round_to: int | str, kind: str, units: int, unit_columns: int = 1) -> int:
    """The unit multiple ``select`` uses for one site of ``kind`` under ``prune.round_to``.

    ``auto``: :func:`unit_multiple`. An integer: that multiple for neurons and hidden channels
    (heads and key/value groups are left exact, as before ``auto`` existed).
    """
    if round_to == "auto":
        return unit_multiple(units, unit_columns)
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise LmpruneError(f"prune.round_to must be auto or an integer >= 1, got {round_to!r}")
    return round_to if kind in ("neurons", "hidden") else 1


def structure_widths(structure: ModelStructure) -> dict[str, int]:
    """Every matrix width pruning can change, by name: FFN neurons, query/key-value head
    columns per attention site, and the hidden size."""
    widths = {}
    for site in structure.attention:
        widths[f"{site.name} query heads x head_dim"] = site.num_heads * site.head_dim
        if site.num_kv_heads != site.num_heads:
            widths[f"{site.name} key/value heads x head_dim"] = site.num_kv_heads * site.head_dim
    for site in structure.ffn:
        widths[f"{site.name} neurons"] = site.width
    widths["hidden size"] = structure.hidden.size
    return widths


def unaligned_widths(model: nn.Module, structure: ModelStructure | None = None) -> list[str]:
    """``"name: width"`` for every width of at least 256 columns that is not a multiple of 8."""
    try:
        structure = structure or describe(model)
    except LmpruneError:
        return []
    return [f"{name}: {width}" for name, width in structure_widths(structure).items()
            if width >= CHECKED_FROM and width % TENSOR_CORE_MULTIPLE]


def warn_if_unaligned(model: nn.Module, what: str = "the model") -> list[str]:
    """Warn (:class:`UnalignedWidthWarning`) about unaligned widths; returns them."""
    found = unaligned_widths(model)
    if found:
        shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        warnings.warn(f"{what} has widths that are not multiples of {TENSOR_CORE_MULTIPLE} "
                      f"({shown}); GPUs run such matrix multiplies on slow kernels and the "
                      f"pruned model may be slower than dense. Prune with prune.round_to=auto "
                      f"(the default) to get aligned widths.", UnalignedWidthWarning, stacklevel=2)
    return found
