"""Physical removal: binary masks -> smaller dense tensors, skipped sublayers, fewer layers.

The result computes exactly what the masked model computes (see masks.py for the semantics)
with fewer parameters and FLOPs; ``sync_config`` then writes the new widths into the config.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from lmprune.arch import ModelStructure, describe
from lmprune.arch.describe import get_module
from lmprune.arch.tables import CONFIG_KEYS, DROPPABLE_LAYERS, SKIPS
from lmprune.errors import MaskError
from lmprune.structures.hf_code import Skipped, install_head_hooks
from lmprune.structures.masks import Masks, _scalar, effective_head_mask
from lmprune.structures.moves import ParamMoves


@dataclass
class SiteDecision:
    """What removal keeps of one attention or FFN site."""

    keep: torch.Tensor | None  # kept head (query) / neuron indices; None = all
    keep_kv: torch.Tensor | None = None  # kept key/value groups (attention only)
    skip: bool = False  # the whole sublayer goes
    constant: bool = False  # nothing kept but the sublayer stays: its output bias is a constant


def _nonzero(mask: torch.Tensor | None) -> torch.Tensor | None:
    return None if mask is None else torch.nonzero(mask.detach() != 0).flatten().cpu()


def decide(structure: ModelStructure, masks: Masks) -> dict[str, SiteDecision]:
    """Turn binary masks into kept indices per site; raise MaskError on impossible requests."""
    masks.validate(structure)
    if not masks.is_binary():
        raise MaskError("physical removal needs binary (0/1) masks; threshold soft masks first, "
                        "e.g. with lmprune.structures.binarize(masks, threshold=0.5)")
    decisions, problems = {}, []
    for site in structure.attention:
        decisions[site.name] = _decide_attention(site, masks, problems)
    for site in structure.ffn:
        scalar = _scalar(masks, "ffn", site)
        keep = _nonzero(masks.neurons.get(site.name))
        skip = scalar is not None and float(scalar) == 0
        decisions[site.name] = SiteDecision(keep, skip=skip,
                                            constant=not skip and keep is not None and len(keep) == 0)
    if structure.attention and all(d.skip or d.constant for n, d in decisions.items()
                                   if n in {s.name for s in structure.attention}):
        problems.append("the masks remove every attention head of the model; keep at least one "
                        "head (or prune with a lower sparsity)")
    if masks.hidden is not None and int((masks.hidden != 0).sum()) == 0:
        problems.append("the hidden mask removes every hidden channel; keep at least one")
    if structure.layers and sum(float(v) == 0 for v in masks.layers.values()) == len(structure.layers):
        problems.append("the layer masks remove every layer; keep at least one")
    if problems:
        raise MaskError("cannot remove these structures:\n" + "\n".join(f"  - {p}" for p in problems))
    return decisions


def _decide_attention(site, masks, problems) -> SiteDecision:
    scalar = _scalar(masks, "attention", site)
    if scalar is not None and float(scalar) == 0:
        return SiteDecision(None, skip=True)
    keep = _nonzero(effective_head_mask(masks, site))
    if keep is None:
        return SiteDecision(None)
    if len(keep) == 0:
        return SiteDecision(keep, keep_kv=keep, constant=True)
    if site.group_size == 1:
        return SiteDecision(keep, keep_kv=keep)
    groups = keep // site.group_size
    kept_groups, counts = torch.unique(groups, return_counts=True)
    if len(set(counts.tolist())) > 1:
        problems.append(
            f"{site.name}: query heads kept per key/value group are {counts.tolist()} "
            f"(groups {kept_groups.tolist()}); grouped-query attention needs the same number of "
            f"query heads in every kept group. Prune whole kv_groups, or keep equal counts.")
    return SiteDecision(keep, keep_kv=kept_groups)


def _rows(index: torch.Tensor, block: int) -> torch.Tensor:
    return (index[:, None] * block + torch.arange(block)).flatten()


class Slicer:
    """Slices parameters in place; a parameter shared by several modules (tied embeddings)
    is sliced once and stays shared. Every replacement is recorded in ``moves`` when given.

    A module that wraps a linear (an adapter such as ``APTLinear``) slices itself: it
    defines ``lmprune_slice(slicer, rows=..., cols=...)`` and cuts its base linear and its
    own tensors through the slicer, so they are recorded too."""

    def __init__(self, moves: ParamMoves | None = None):
        # id(old) -> (old, new); holding ``old`` keeps its id from being reused.
        self.done: dict[int, tuple[nn.Parameter, nn.Parameter]] = {}
        self.moves = moves

    def param(self, module: nn.Module, name: str, dim: int, index: torch.Tensor) -> None:
        old = getattr(module, name, None)
        if old is None:
            return
        if id(old) in self.done:
            new = self.done[id(old)][1]
        else:
            data = old.data.index_select(dim, index.to(old.device)).clone()
            new = nn.Parameter(data, requires_grad=old.requires_grad)
            self.done[id(old)] = (old, new)
            if self.moves is not None:
                self.moves.record(old, new, dim, index)
        setattr(module, name, new)

    def retie(self, model: nn.Module) -> None:
        """Point every other holder of a sliced parameter (tied embeddings) at the new one."""
        for module in model.modules():
            for name, param in list(module.named_parameters(recurse=False)):
                if id(param) in self.done and self.done[id(param)][0] is param:
                    setattr(module, name, self.done[id(param)][1])
                    if isinstance(module, nn.Embedding):
                        module.embedding_dim = module.weight.shape[1]

    def linear(self, module: nn.Module, *, rows=None, cols=None) -> None:
        own = getattr(module, "lmprune_slice", None)
        if own is not None:
            own(self, rows=rows, cols=cols)
            return
        if rows is not None:
            self.param(module, "weight", 0, rows)
            self.param(module, "bias", 0, rows)
            module.out_features = len(rows)
        if cols is not None:
            self.param(module, "weight", 1, cols)
            module.in_features = len(cols)


def _set_head_attrs(holder: nn.Module, heads: int, kv: int, head_dim: int) -> None:
    values = {"num_attention_heads": heads, "num_heads": heads, "n_heads": heads,
              "num_key_value_heads": kv, "num_key_value_groups": heads // max(kv, 1),
              "all_head_size": heads * head_dim, "inner_dim": heads * head_dim}
    for key, value in values.items():
        if hasattr(holder, key):
            setattr(holder, key, value)


@torch.no_grad()
def remove(model: nn.Module, masks: Masks, structure: ModelStructure | None = None,
           moves: ParamMoves | None = None) -> nn.Module:
    """Physically remove what the binary ``masks`` zero out; returns ``model`` (changed in place).

    ``moves`` (optional) records which new parameter replaced which old one and how, so that
    optimizer state and copies of parameters can follow (:mod:`lmprune.structures.moves`).
    Removal can be repeated on a pruned model (APT compacts at every pruning event)."""
    structure = structure or describe(model)
    decisions = decide(structure, masks)
    own_config(model)
    remember_original_config(model, structure)
    slicer = Slicer(moves)
    for site in structure.attention:
        _prune_attention(model, site, decisions[site.name], slicer)
    for site in structure.ffn:
        d = decisions[site.name]
        if d.keep is not None and not d.skip and not d.constant:
            for path in site.ins:
                slicer.linear(get_module(model, path), rows=d.keep)
            slicer.linear(get_module(model, site.out), cols=d.keep)
    if masks.hidden is not None:
        _prune_hidden(model, structure, _nonzero(masks.hidden), slicer)
    slicer.retie(model)
    for site in structure.attention + structure.ffn:
        d = decisions[site.name]
        if d.skip or d.constant:
            _skip_sublayer(model, site, skip_table(structure), constant=d.constant, moves=moves)
    dropped = [layer for layer in structure.layers
               if layer.name in masks.layers and float(masks.layers[layer.name]) == 0]
    _drop_layers(model, structure, dropped)
    install_head_hooks(model)
    sync_config(model)
    return model


def _prune_attention(model, site, d: SiteDecision, slicer: Slicer) -> None:
    if d.keep is None or d.skip or d.constant:
        return
    hd = site.head_dim
    slicer.linear(get_module(model, site.q), rows=_rows(d.keep, hd))
    slicer.linear(get_module(model, site.k), rows=_rows(d.keep_kv, hd))
    slicer.linear(get_module(model, site.v), rows=_rows(d.keep_kv, hd))
    slicer.linear(get_module(model, site.o), cols=_rows(d.keep, hd))
    holder = get_module(model, site.q.rsplit(".", 1)[0])
    _set_head_attrs(holder, len(d.keep), len(d.keep_kv), hd)
    if site.shared_position_bias:
        # T5 and MPNet add one position-bias tensor over all original heads in every layer.
        previous = getattr(holder, "lmprune_kept_heads", None)
        kept = d.keep.tolist() if previous is None else [previous[i] for i in d.keep.tolist()]
        holder.lmprune_kept_heads = tuple(kept)


def _prune_hidden(model, structure: ModelStructure, keep: torch.Tensor, slicer: Slicer) -> None:
    hidden = structure.hidden
    for path in hidden.embeddings:
        module = get_module(model, path)
        slicer.param(module, "weight", 1, keep)
        module.embedding_dim = len(keep)
    for path in hidden.norms:
        module = get_module(model, path)
        slicer.param(module, "weight", 0, keep)
        slicer.param(module, "bias", 0, keep)
        if isinstance(module, nn.LayerNorm):
            module.normalized_shape = (len(keep),)
    for path in hidden.readers:
        slicer.linear(get_module(model, path), cols=keep)
    for path in hidden.writers:
        slicer.linear(get_module(model, path), rows=keep)
    for module in model.modules():  # skipped sublayers' constant output biases
        if isinstance(module, Skipped) and module.bias is not None:
            slicer.param(module, "bias", 0, keep)
            module.options["hidden"] = len(keep)


def skip_table(structure: ModelStructure) -> dict:
    """How removed sublayers are replaced: the model type's own row, else its family's."""
    return SKIPS.get(structure.model_type) or SKIPS[structure.family]


def _skip_sublayer(model, site, skips: dict, constant: bool,
                   moves: ParamMoves | None = None) -> None:
    kind = "cross" if site.name.endswith(".cross") else ("ffn" if hasattr(site, "width") else "attention")
    out = get_module(model, site.o if hasattr(site, "o") else site.out)
    bias = out.bias if constant and getattr(out, "bias", None) is not None else None
    hidden = out.out_features
    for suffix, skind in skips[kind].items():
        path = getattr(site, suffix) if suffix in ("block", "norm") else f"{site.block}.{suffix}"
        if path is None:
            continue
        old = get_module(model, path)
        options = {"kind": skind, "hidden": hidden, "bias": bias is not None and skind != "norm"}
        if skind in ("decoder_attention", "t5_self"):
            options.update(head_dim=getattr(site, "head_dim", 0),
                           layer_idx=int(site.layer.rsplit(".", 1)[1]))
        new = _build_skip(old, site, options)
        if options["bias"]:  # the constant keeps the frozen / trained state of the bias
            new.bias.data.copy_(bias.data)
            new.bias.requires_grad_(bias.requires_grad)
            if moves is not None:
                moves.record(bias, new.bias)
        parent, _, name = path.rpartition(".")
        setattr(get_module(model, parent), name, new)


def _build_skip(old: nn.Module, site, options: dict) -> Skipped:
    """A Skipped module for ``old``, reusing the norms / bias tables that stay in use."""
    kind = options["kind"]
    if kind in ("bert_attention", "bert_output", "mpnet_attention"):
        ln = old.output.LayerNorm if kind == "bert_attention" else old.LayerNorm
        options["eps"] = ln.eps
    if kind == "t5_self" and site.position_bias:
        attn = old.SelfAttention
        options["position_bias"] = {
            "buckets": attn.relative_attention_num_buckets,
            "heads": attn.relative_attention_bias.embedding_dim,
            "max_distance": attn.relative_attention_max_distance, "is_decoder": attn.is_decoder}
    like = next(old.parameters(), None)
    new = Skipped(**options)
    if like is not None:
        new.to(dtype=like.dtype, device=like.device)
    if kind == "bert_attention":
        new.output.LayerNorm = old.output.LayerNorm
    elif kind in ("bert_output", "mpnet_attention"):
        new.LayerNorm = old.LayerNorm
    elif options.get("position_bias"):
        new.SelfAttention.relative_attention_bias = old.SelfAttention.relative_attention_bias
    return new


def _drop_layers(model, structure: ModelStructure, dropped) -> None:
    if not dropped:
        return
    if not DROPPABLE_LAYERS[structure.family]:
        for layer in dropped:
            for site in structure.attention + structure.ffn:
                if site.layer == layer.name and get_module(model, site.block) is not None \
                        and not getattr(get_module(model, site.block), "lmprune_skipped", False):
                    _skip_sublayer(model, site, skip_table(structure), constant=False)
        return
    for stack_path in {layer.stack for layer in dropped}:
        stack = get_module(model, stack_path)
        gone = {layer.index for layer in dropped if layer.stack == stack_path}
        kept = [block for i, block in enumerate(stack) if i not in gone]
        parent, _, name = stack_path.rpartition(".")
        setattr(get_module(model, parent), name, nn.ModuleList(kept))
        for new_index, block in enumerate(kept):
            for module in block.modules():
                if hasattr(module, "layer_idx"):
                    module.layer_idx = new_index
                if isinstance(module, Skipped):
                    module.options["layer_idx"] = new_index if module.options["layer_idx"] is not None else None
        layer_types = getattr(model.config, "layer_types", None)
        if layer_types is not None and len(layer_types) == len(stack):
            model.config.layer_types = [t for i, t in enumerate(layer_types) if i not in gone]


def own_config(model: nn.Module) -> None:
    """Give ``model`` its own copy of its config before removal writes the new widths into it.

    Models built from one config object share it (``Model(config)`` twice, or a model and the
    config a caller keeps); changing it in place would give the other models, and every model
    built from it later, the pruned widths.
    """
    old = getattr(model, "config", None)
    if old is None:
        return
    new = copy.deepcopy(old)
    for module in model.modules():
        if getattr(module, "config", None) is old:
            module.config = new


def remember_original_config(model: nn.Module, structure: ModelStructure) -> None:
    """Keep the pre-pruning widths on the config (export rebuilds stock modules from them)."""
    config = model.config
    if getattr(config, "lmprune_original", None):
        return
    keys = CONFIG_KEYS[structure.family]
    names = [keys[k] for k in ("hidden", "ffn", "heads", "kv", "head_dim") if keys[k]]
    original = {name: getattr(config, name) for name in names if getattr(config, name, None) is not None}
    if structure.family == "llama" and "head_dim" not in original:
        original["head_dim"] = structure.attention[0].head_dim
    config.lmprune_original = original


def sync_config(model: nn.Module) -> None:
    """Write the model's actual widths into its config (the largest where layers differ)."""
    structure = describe(model)
    keys, config = CONFIG_KEYS[structure.family], model.config
    setattr(config, keys["hidden"], structure.hidden.size)
    if structure.ffn:
        setattr(config, keys["ffn"], max(site.width for site in structure.ffn))
    if structure.attention:
        setattr(config, keys["heads"], max(site.num_heads for site in structure.attention))
        if keys["kv"]:
            setattr(config, keys["kv"], max(site.num_kv_heads for site in structure.attention))
        if keys["head_dim"]:
            setattr(config, keys["head_dim"], structure.attention[0].head_dim)
    for stack, key in keys["layers"].items():
        count = sum(1 for layer in structure.layers if layer.name.startswith(stack + "."))
        setattr(config, key, count)
