"""Build a :class:`ModelStructure` from a live model and the family tables.

Sizes are read from the modules themselves (not the config), so a model that is already
pruned, with different widths per layer or removed sublayers, is described correctly.
"""
from __future__ import annotations

from torch import nn

from lmprune.arch.spec import AttentionSite, FFNSite, HiddenSite, LayerSite, ModelStructure
from lmprune.arch.tables import MODEL_TYPES
from lmprune.errors import UnsupportedModelError

SUPPORTED_MODEL_TYPES = tuple(sorted(MODEL_TYPES))


def get_module(model: nn.Module, path: str) -> nn.Module | None:
    """``model.get_submodule(path)`` or None when any part is missing."""
    try:
        return model.get_submodule(path) if path else model
    except AttributeError:
        return None


def is_skipped(module: nn.Module | None) -> bool:
    """True for the modules that replace a removed sublayer (see structures/skip.py)."""
    return module is None or bool(getattr(module, "lmprune_skipped", False))


def base_prefix(model: nn.Module) -> str:
    """Dotted path of the base model inside ``model`` ("" when model is the base model)."""
    base = getattr(model, "base_model", model)
    for name, module in model.named_modules():
        if module is base:
            return name + "." if name else ""
    return ""


def describe(model: nn.Module) -> ModelStructure:
    """Describe ``model``'s prunable sites; raises for an unsupported ``model_type``."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    table = MODEL_TYPES.get(model_type)
    if table is None:
        raise UnsupportedModelError(
            f"model_type {model_type!r} is not supported by lmprune. Supported model types: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)} (BERT, RoBERTa, MPNet, T5, LLaMA, Mistral, "
            "Qwen2)."
        )
    prefix = base_prefix(model)
    attention, ffn, layers = [], [], []
    for stack_name, stack_rel in table["stacks"].items():
        stack_path = prefix + stack_rel
        stack = get_module(model, stack_path)
        if stack is None:
            continue
        for index, block in enumerate(stack):
            layer_name = f"{stack_name}.{index}"
            root = f"{stack_path}.{index}"
            attn = _attention_sites(model, table, stack_name, layer_name, root, block, index)
            ffns = _ffn_sites(model, table, stack_name, layer_name, root, block)
            attention += attn
            ffn += ffns
            layers.append(LayerSite(layer_name, stack_path, index,
                                    tuple(a.name for a in attn), tuple(f.name for f in ffns)))
    hidden = _hidden_site(model, table, prefix, attention, ffn)
    embedding_params = tuple(f"{p}.weight" for p in hidden.embeddings)
    heads = tuple(p for p in table["head_readers"] if get_module(model, p) is not None)
    return ModelStructure(model_type, table["family"], tuple(attention), tuple(ffn),
                          tuple(layers), hidden, embedding_params, heads)


def _resolve(rel: str, block: nn.Module) -> str:
    """Resolve the ``layer.-1`` shorthand (T5's FFN is the last sublayer of a block)."""
    if "layer.-1" in rel:
        rel = rel.replace("layer.-1", f"layer.{len(block.layer) - 1}")
    return rel


def _attention_sites(model, table, stack_name, layer_name, root, block, index):
    sites = []
    for row in table["attention"]:
        if stack_name not in row.get("stacks", (stack_name,)):
            continue
        paths = {key: f"{root}.{_resolve(row[key], block)}" for key in ("q", "k", "v", "o")}
        block_path = f"{root}.{row['block']}" if row["block"] else root
        if is_skipped(get_module(model, block_path)) or get_module(model, paths["q"]) is None:
            continue
        holder = get_module(model, f"{root}.{row.get('head_dim_module', row['block'])}")
        head_dim = int(getattr(holder, row["head_dim_attr"]))
        q, k = get_module(model, paths["q"]), get_module(model, paths["k"])
        norm = f"{root}.{row['norm']}" if row.get("norm") else None
        post = f"{root}.{row['post_norm']}" if row.get("post_norm") else None
        sites.append(AttentionSite(
            name=f"{layer_name}.{row['tag']}", layer=layer_name, block=block_path, norm=norm,
            post_norm=post, num_heads=q.weight.shape[0] // head_dim,
            num_kv_heads=k.weight.shape[0] // head_dim, head_dim=head_dim,
            position_bias=bool(row.get("position_bias_first")) and index == 0,
            shared_position_bias=bool(row.get("shared_position_bias")), **paths))
    return sites


def _ffn_sites(model, table, stack_name, layer_name, root, block):
    sites = []
    for row in table["ffn"]:
        out = f"{root}.{_resolve(row['out'], block)}"
        ins = tuple(f"{root}.{_resolve(p, block)}" for p in row["ins"])
        ins = tuple(p for p in ins if get_module(model, p) is not None)
        out_module = get_module(model, out)
        if not ins or out_module is None or is_skipped(out_module):
            continue
        block_path = f"{root}.{_resolve(row['block'], block)}" if row["block"] else root
        norm = f"{root}.{_resolve(row['norm'], block)}" if row.get("norm") else None
        post = f"{root}.{row['post_norm']}" if row.get("post_norm") else None
        sites.append(FFNSite(name=f"{layer_name}.{row['tag']}", layer=layer_name, ins=ins,
                             out=out, width=out_module.weight.shape[1], block=block_path,
                             norm=norm, post_norm=post))
    return sites


def _hidden_site(model, table, prefix, attention, ffn) -> HiddenSite:
    def present(paths):
        return tuple(p for p in paths if get_module(model, p) is not None)

    embeddings = present(prefix + p for p in table["base_embeddings"])
    norms = list(present(prefix + p for p in table["base_norms"]))
    readers, writers = [], []
    for site in attention:
        readers += [site.q, site.k, site.v]
        writers.append(site.o)
        norms += [n for n in (site.norm, site.post_norm) if n]
    for site in ffn:
        readers += list(site.ins)
        writers.append(site.out)
        norms += [n for n in (site.norm, site.post_norm) if n]
    # Norms of removed sublayers that stay (BERT post-norms) still normalise the hidden state.
    for name, module in model.named_modules():
        if is_skipped(module) and not isinstance(module, nn.Identity):
            norms += [f"{name}.{n}" for n, m in module.named_modules()
                      if n and _is_norm(m)]
    def linears(paths):
        return tuple(p for p in present(paths) if isinstance(get_module(model, p), nn.Linear))

    readers += linears(table["head_readers"])
    writers += linears(table["head_writers"])
    norms += present(table["head_norms"])
    size = get_module(model, embeddings[0]).weight.shape[1]
    return HiddenSite(size=size, entries=present(prefix + p for p in table["base_entries"]),
                      embeddings=embeddings, norms=tuple(dict.fromkeys(norms)),
                      readers=tuple(dict.fromkeys(readers)), writers=tuple(dict.fromkeys(writers)))


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith(("RMSNorm", "LayerNorm"))
