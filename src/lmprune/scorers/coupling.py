"""Which slice of which weight tensor belongs to which prunable group.

A group (one head, one key/value group, one FFN neuron, one hidden channel, one sublayer, one
layer) is spread over several *coupled* tensors: an FFN neuron is a row of ``gate_proj``, a row
of ``up_proj`` and a column of ``down_proj``. Scorers compute one importance per group *per
tensor* and then aggregate over the group's tensors (LLM-Pruner, Ma et al. 2023, Sec. 3.2:
"group importance" = aggregation of the importances of the coupled structures).

Coupling used here (weights only; biases are ignored, as LLM-Pruner does):

* ``heads`` (query head h): rows ``h*d:(h+1)*d`` of q, and of k and v when the attention is
  multi-head (with grouped-query attention k/v rows belong to the key/value group, since pruning
  one query head removes none of them); columns ``h*d:(h+1)*d`` of o.
* ``kv_groups`` (group j): the q rows and o columns of its ``group_size`` query heads and rows
  ``j*d:(j+1)*d`` of k and v.
* ``neurons`` (neuron i): row i of every FFN input (gate/up, ``wi``/``wi_0``/``wi_1``, BERT
  intermediate) and column i of the output projection.
* ``hidden`` (channel c): column c of every embedding and of every reader (q/k/v, FFN inputs,
  LM/task heads), row c of every writer (o, FFN outputs, pooler), element c of every norm.
* ``attention`` / ``ffn``: the whole q/k/v/o (resp. FFN input and output) matrices plus the
  sublayer's pre-norm (removed with it); ``layers``: every weight under the layer module.

The order of a group's tensors (what ``aggregation="last"`` picks) is the order of
``model.named_parameters()``: q, k, v, o for attention groups; gate, up, down for neurons;
embeddings first and the LM head last for hidden channels; for a LLaMA layer q, k, v, o, gate,
up, down, input norm, post-attention norm.

**Channels.** LLM-Pruner scores every *channel* (one row or column index) of every coupled
tensor, reduces across the tensors channel by channel, and only then sums the ``head_dim``
channels of a head ("consecutive groups"). A group therefore owns ``unit`` consecutive indices
of a tensor that are *aligned* to ``channels`` channels: a head owns ``head_dim`` rows of q
(and of k/v without grouped-query attention) and ``head_dim`` columns of o, one channel each;
a key/value group owns ``head_dim`` rows of k and v but ``group_size * head_dim`` rows of q
and columns of o, which fold onto its ``head_dim`` channels by summing the query heads of the
group at the same offset (query head h belongs to key/value group ``h // group_size``, HF's
``repeat_kv`` pairing; LLM-Pruner's own fold pairs h with ``h % num_kv_heads`` instead).
Neurons and hidden channels are one channel per group; a sublayer or layer is one channel.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from lmprune.arch import ModelStructure
from lmprune.errors import LmpruneError
from lmprune.pruners.selection import in_range

#: Group kinds with one score per unit (1-D tensors) and with one score per site (floats).
UNIT_KINDS = ("heads", "kv_groups", "neurons", "hidden")
SITE_KINDS = ("attention", "ffn", "layers")
ALL_KINDS = UNIT_KINDS + SITE_KINDS
AGGREGATIONS = ("sum", "mean", "max", "prod", "last")
#: Where the coupled tensors are combined: per aligned channel, then summed over a group's
#: channels (LLM-Pruner), or per group after summing each tensor over the group's elements.
REDUCTIONS = ("channel", "group")


@dataclass(frozen=True)
class Slice:
    """The part of one tensor that a site's groups own.

    ``dim`` is the tensor dimension indexed by the groups and ``unit`` how many consecutive
    indices along it one group owns (``head_dim`` for a head); ``dim=None`` means the whole
    tensor is one unit (sublayer and layer kinds). ``channels`` is how many aligned channels
    those ``unit`` indices fold onto (module docstring): ``unit`` is a multiple of it.
    """

    kind: str
    site: str  # site name; "" for the hidden channel
    dim: int | None = None
    unit: int = 1
    channels: int = 1


@dataclass
class CoupledTensor:
    """One weight tensor and every group slice it takes part in."""

    name: str  # parameter name in ``model.named_parameters()``
    param: nn.Parameter
    slices: list[Slice] = field(default_factory=list)


def check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in ALL_KINDS]
    if unknown:
        raise LmpruneError(f"unknown group kind(s) {unknown}; valid kinds: {', '.join(ALL_KINDS)}")
    return kinds


def check_aggregation(aggregation: str) -> str:
    if aggregation not in AGGREGATIONS:
        raise LmpruneError(f"unknown aggregation {aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
    return aggregation


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise LmpruneError(f"unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")
    return reduction


def coupled_tensors(model: nn.Module, structure: ModelStructure, kinds: Iterable[str],
                    layer_range: list[int] | None = None) -> list[CoupledTensor]:
    """The weight tensors the requested ``kinds`` need, in ``named_parameters()`` order.

    Sites outside ``layer_range`` are not scored (the hidden channel always covers the whole
    model). A weight shared by two modules (tied embeddings) appears once.
    """
    kinds = check_kinds(kinds)
    slices: dict[int, list[Slice]] = {}

    def add(path: str, *new: Slice) -> None:
        tensor = getattr(model.get_submodule(path), "weight", None)
        if new and isinstance(tensor, nn.Parameter):
            own = slices.setdefault(id(tensor), [])
            own += [s for s in new if s not in own]

    for site in structure.attention:
        if in_range(site.layer, layer_range):
            _attention_slices(site, kinds, add)
    for site in structure.ffn:
        if in_range(site.layer, layer_range):
            _ffn_slices(site, kinds, add)
    if "hidden" in kinds:
        _hidden_slices(structure, add)
    if "layers" in kinds:
        for layer in structure.layers:
            if in_range(layer.name, layer_range):
                block = model.get_submodule(f"{layer.stack}.{layer.index}")
                for name, p in block.named_parameters():
                    if name.endswith("weight"):
                        slices.setdefault(id(p), []).append(Slice("layers", layer.name))
    return [CoupledTensor(name, p, slices[id(p)])
            for name, p in model.named_parameters() if id(p) in slices]


def _attention_slices(site, kinds, add) -> None:
    d, group = site.head_dim, site.group_size * site.head_dim
    heads = "heads" in kinds
    kv = "kv_groups" in kinds
    mha = site.group_size == 1
    q_rows = (_when(heads, Slice("heads", site.name, 0, d, d))
              + _when(kv, Slice("kv_groups", site.name, 0, group, d)))
    kv_rows = (_when(heads and mha, Slice("heads", site.name, 0, d, d))
               + _when(kv, Slice("kv_groups", site.name, 0, d, d)))
    o_cols = (_when(heads, Slice("heads", site.name, 1, d, d))
              + _when(kv, Slice("kv_groups", site.name, 1, group, d)))
    whole = _when("attention" in kinds or "layers" in kinds, Slice("attention", site.name))
    add(site.q, *q_rows, *whole)
    add(site.k, *kv_rows, *whole)
    add(site.v, *kv_rows, *whole)
    add(site.o, *o_cols, *whole)
    if whole and site.norm:
        add(site.norm, *whole)


def _ffn_slices(site, kinds, add) -> None:
    neurons = "neurons" in kinds
    whole = _when("ffn" in kinds or "layers" in kinds, Slice("ffn", site.name))
    for path in site.ins:
        add(path, *_when(neurons, Slice("neurons", site.name, 0)), *whole)
    add(site.out, *_when(neurons, Slice("neurons", site.name, 1)), *whole)
    if whole and site.norm:
        add(site.norm, *whole)


def _when(condition: bool, piece: Slice) -> list[Slice]:
    return [piece] if condition else []


def _hidden_slices(structure: ModelStructure, add) -> None:
    hidden = structure.hidden
    for path in hidden.embeddings + hidden.readers:
        add(path, Slice("hidden", "", 1))
    for path in hidden.writers + hidden.norms:
        add(path, Slice("hidden", "", 0))


def index_sums(values: torch.Tensor, piece: Slice,
               dim_sums: dict[int, torch.Tensor]) -> torch.Tensor:
    """Sum ``values`` over every dimension but the one ``piece`` indexes: one number per index
    (a row of q, a column of o), or one number for the whole tensor (``dim=None``).

    ``dim_sums`` caches the sums per indexed dimension, so a tensor with several slices along
    the same dimension is reduced once. The result is linear in ``values``, so sums from
    several backward passes may simply be added.
    """
    if piece.dim is None:
        return values.sum().reshape(1)
    if piece.dim not in dim_sums:
        others = [d for d in range(values.dim()) if d != piece.dim]
        dim_sums[piece.dim] = values.sum(dim=others) if others else values
    return dim_sums[piece.dim]


def to_channels(sums: torch.Tensor, piece: Slice) -> torch.Tensor:
    """Per-index sums -> ``[groups, channels]``: a group's ``unit`` indices folded onto its
    ``channels`` aligned channels (the query heads of a key/value group summed offset by
    offset; see the module docstring)."""
    if piece.dim is None:
        return sums.reshape(1, 1)
    return sums.reshape(-1, piece.unit // piece.channels, piece.channels).sum(1)


def per_unit(values: torch.Tensor, piece: Slice, dim_sums: dict[int, torch.Tensor]) -> torch.Tensor:
    """Sum ``values`` over each group's elements of this tensor: one number per group."""
    return to_channels(index_sums(values, piece, dim_sums), piece).sum(1)


def aggregate(stack: list[torch.Tensor], how: str) -> torch.Tensor:
    """Combine one group's per-tensor importances (listed in parameter order, each of one
    shape: per group, or per group and channel), in float64, element by element.

    ``prod`` of many small importances underflows: a hidden channel spans every tensor of
    the model (about 270 in smollm2-135m), and its product is 0 even in float64.
    """
    values = torch.stack(stack).double()
    if how == "sum":
        return values.sum(0)
    if how == "mean":
        return values.mean(0)
    if how == "max":
        return values.max(0).values
    if how == "prod":
        return values.prod(0)
    if how == "last":
        return values[-1]
    raise LmpruneError(f"unknown aggregation {how!r}; valid: {', '.join(AGGREGATIONS)}")
