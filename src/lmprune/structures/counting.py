"""Parameter and FLOP counts per group and for the whole model.

Budgets can be expressed in parameters or FLOPs; embeddings and task heads are reported
separately because most papers (APT, CoFi, Kwon et al.) exclude them from the budget.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import nn

from lmprune.arch import AttentionSite, FFNSite, ModelStructure, describe
from lmprune.arch.describe import get_module


@dataclass
class ParamCount:
    """Unique parameters (tied weights counted once)."""

    total: int
    embeddings: int  # token / position / type embeddings (and a tied output layer)
    heads: int  # task heads: lm_head (untied), classifier, pooler, qa_outputs
    body: int  # everything else: the transformer layers and their norms
    per_layer: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _params_of(module: nn.Module | None, seen: set[int]) -> int:
    if module is None:
        return 0
    total = 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def count_parameters(model: nn.Module, structure: ModelStructure | None = None) -> ParamCount:
    """Count ``model``'s parameters split into embeddings, task heads and body."""
    structure = structure or describe(model)
    seen: set[int] = set()
    embeddings = sum(_params_of(get_module(model, p), seen) for p in structure.hidden.embeddings)
    heads = sum(_params_of(get_module(model, p), seen) for p in structure.head_modules)
    per_layer = {}
    for layer in structure.layers:
        per_layer[layer.name] = _params_of(get_module(model, f"{layer.stack}.{layer.index}"), seen)
    rest = _params_of(model, seen)
    total = embeddings + heads + sum(per_layer.values()) + rest
    return ParamCount(total, embeddings, heads, total - embeddings - heads, per_layer)


def _linear_cost(model, path: str, per: str) -> int:
    """Parameters of one output row (``per="row"``) or one input column of a linear."""
    module = get_module(model, path)
    if per == "row":
        return module.in_features + (1 if module.bias is not None else 0)
    return module.out_features


def head_cost(model: nn.Module, site: AttentionSite) -> dict[str, int]:
    """Parameters removed with one query head and with one key/value group."""
    hd = site.head_dim
    query = hd * (_linear_cost(model, site.q, "row") + _linear_cost(model, site.o, "col"))
    kv = hd * (_linear_cost(model, site.k, "row") + _linear_cost(model, site.v, "row"))
    if site.group_size == 1:
        return {"head": query + kv, "kv_group": query + kv}
    return {"head": query, "kv_group": kv + site.group_size * query}


def neuron_cost(model: nn.Module, site: FFNSite) -> int:
    """Parameters removed with one FFN neuron (its rows in every input, its output column)."""
    return sum(_linear_cost(model, p, "row") for p in site.ins) + _linear_cost(model, site.out, "col")


def hidden_cost(model: nn.Module, structure: ModelStructure) -> int:
    """Parameters removed with one hidden (residual) channel, counting shared tensors once."""
    seen, total = set(), 0
    for path in structure.hidden.embeddings:
        weight = get_module(model, path).weight
        if id(weight) not in seen:
            seen.add(id(weight))
            total += weight.shape[0]
    for path in structure.hidden.norms:
        module = get_module(model, path)
        total += sum(1 for name in ("weight", "bias") if getattr(module, name, None) is not None)
    for path in structure.hidden.readers:
        module = get_module(model, path)
        if id(module.weight) not in seen:
            seen.add(id(module.weight))
            total += module.out_features
    for path in structure.hidden.writers:
        total += _linear_cost(model, path, "row")
        if path in structure.hidden.readers:  # square hidden->hidden layer: one shared weight
            total -= 1
    return total


def sublayer_cost(model: nn.Module, site: AttentionSite | FFNSite) -> int:
    """Parameters removed with a whole attention or FFN sublayer."""
    paths = (site.q, site.k, site.v, site.o) if isinstance(site, AttentionSite) else site.ins + (site.out,)
    seen: set[int] = set()
    return sum(_params_of(get_module(model, p), seen) for p in paths + ((site.norm,) if site.norm else ()))


def count_flops(model: nn.Module, seq_len: int, structure: ModelStructure | None = None) -> dict[str, int]:
    """Forward FLOPs for one sequence of ``seq_len`` tokens (2 per multiply-add).

    ``linear``: every matrix product with a weight (including the output head);
    ``attention``: scores and weighted sums (QK^T and AV) at full, non-causal length.
    Norms, activations and softmax are left out (they are not matmuls).
    """
    structure = structure or describe(model)
    linear = 0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            linear += 2 * module.in_features * module.out_features * seq_len
    attention = sum(2 * 2 * seq_len * seq_len * site.num_heads * site.head_dim
                    for site in structure.attention)
    return {"linear": linear, "attention": attention, "total": linear + attention}
