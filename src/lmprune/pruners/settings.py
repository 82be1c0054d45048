"""Each method's best-known settings, as data, and the resolved settings a pruner uses.

``prune.layer_range: auto`` (the default) resolves per method:

* block-wise methods (taylor, adapruner, magnitude, random) on decoder-only language models
  (the ``llama`` family: LLaMA, Mistral, Qwen2, SmolLM2) keep the first and the last layers
  the way LLM-Pruner's LLaMA-7B recipe does (``--block_*_layer_start 4 --end 30``: 4 of 32
  first layers, 2 of 32 last layers), as fractions of the depth: for SmolLM2's 30 layers
  that is layers 4..27 (``[4, 28)``), for a 32-layer model ``[4, 30)``; on encoders and
  encoder-decoders (no such measurement exists) every layer;
* methods that rank whole sublayers or layers (sublayer-ri, block-influence) consider every
  layer, as their papers do.

The measurements behind these choices are in ``docs/pruning_defaults.md``.
"""
from __future__ import annotations

from dataclasses import dataclass

from lmprune.arch import ModelStructure
from lmprune.errors import LmpruneError

#: LLM-Pruner's kept layers of LLaMA-7B as fractions of the depth: (first, last).
LLM_PRUNER_KEPT = (4 / 32, 2 / 32)
#: method -> kept (first, last) fractions for ``layer_range: auto``; None = every layer.
AUTO_LAYERS: dict[str, tuple[float, float] | None] = {
    "taylor": LLM_PRUNER_KEPT, "adapruner": LLM_PRUNER_KEPT, "magnitude": LLM_PRUNER_KEPT,
    "random": LLM_PRUNER_KEPT, "sublayer-ri": None, "block-influence": None,
}


def depth(structure: ModelStructure) -> int:
    """Layers per stack (the largest layer index + 1)."""
    return 1 + max((layer.index for layer in structure.layers), default=-1)


def auto_layer_range(method: str, num_layers: int) -> list[int] | None:
    """What ``layer_range: auto`` means for ``method`` on a ``num_layers``-deep model."""
    kept = AUTO_LAYERS.get(method)
    if kept is None:
        return None
    first, last = round(kept[0] * num_layers), round(kept[1] * num_layers)
    if first + last >= num_layers or first + last == 0:
        return None
    return [first, num_layers - last]


def resolve_layer_range(method: str, value, structure: ModelStructure) -> list[int] | None:
    """``prune.layer_range`` with ``auto`` replaced by the method's setting."""
    if value == "auto":
        if structure.family != "llama":
            return None
        return auto_layer_range(method, depth(structure))
    if value is not None and not isinstance(value, list):
        raise LmpruneError(f"prune.layer_range must be [start, end), null or auto, got {value!r}")
    return value


@dataclass(frozen=True)
class PruneSettings:
    """``run.prune`` with everything resolved: what a pruner actually does."""

    method: str
    sparsity: float
    structures: tuple[str, ...]
    layer_range: list[int] | None
    round_to: int
    budget: str
    allocation: str
    head_rounding: str = "down"

    def describe(self) -> str:
        layers = ("all layers" if self.layer_range is None
                  else f"layers {self.layer_range[0]}..{self.layer_range[1] - 1}")
        what = ("of non-embedding parameters" if self.budget == "params"
                else "of the units of each kind")
        return (f"{self.method}: {self.sparsity:.0%} {what}, {'/'.join(self.structures)}, "
                f"{layers}, {self.allocation} allocation, round_to {self.round_to}")


def prune_settings(run, structure: ModelStructure, structures=None) -> PruneSettings:
    """The resolved settings of ``run.prune`` (``structures`` overrides the listed kinds)."""
    prune = run.prune
    return PruneSettings(prune.method, prune.sparsity,
                         tuple(structures if structures is not None else prune.structures),
                         resolve_layer_range(prune.method, prune.layer_range, structure),
                         prune.round_to, getattr(prune, "budget", "units"),
                         getattr(prune, "allocation", "uniform"),
                         getattr(prune, "head_rounding", "down"))


#: the config section holding each method's own settings (reported with every run)
METHOD_SECTIONS = {"taylor": "taylor", "adapruner": "adapruner", "magnitude": "magnitude",
                   "sublayer-ri": "sublayer"}


def settings_record(run, structure: ModelStructure) -> dict:
    """What a report says about how a run pruned: the resolved ``prune`` settings, and the
    method's own section (AdaPruner also uses ``taylor``'s aggregation and reduction)."""
    from dataclasses import asdict

    settings = prune_settings(run, structure)
    record = {"summary": settings.describe(), "prune": asdict(settings)}
    section = METHOD_SECTIONS.get(settings.method)
    if section is not None:
        record[section] = asdict(getattr(run, section))
    if settings.method == "adapruner":
        record["taylor"] = asdict(run.taylor)
    return record


def check_settings(structure: ModelStructure, settings: PruneSettings) -> None:
    """Errors before any expensive work: an empty layer range, or a units budget that would
    leave a site without units."""
    from lmprune.pruners._budget import check_budget, layers_in_range

    if settings.budget == "units":
        check_budget(structure, list(settings.structures), settings.sparsity,
                     settings.layer_range)
    else:
        layers_in_range(structure, settings.layer_range)


def select_masks(model, structure: ModelStructure, scores, settings: PruneSettings):
    """Masks for ``scores`` under ``settings``' budget: a parameter share or unit counts."""
    from lmprune.pruners.param_budget import select_params
    from lmprune.pruners.selection import select

    if settings.budget == "units":
        return select(structure, scores, settings.sparsity, list(settings.structures),
                      settings.round_to, settings.layer_range)
    return select_params(model, structure, scores, settings.sparsity, list(settings.structures),
                         settings.round_to, settings.layer_range, settings.allocation,
                         settings.head_rounding).masks
