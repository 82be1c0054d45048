"""Code shipped inside pruned checkpoints (copied there as ``lmprune_pruned.py``).

Stock transformers configs describe one width per model; a model pruned with different widths
per layer, or with whole sublayers removed, needs a little code to rebuild its shapes before
the weights load. This file is that code. It imports only torch and transformers, so
``AutoModel*.from_pretrained(path, trust_remote_code=True)`` works without lmprune installed,
and lmprune's own loader uses the same file (no second implementation to drift).

The checkpoint's ``config.lmprune_structure`` says what to rebuild:

* ``init``: config values the stock ``__init__`` must see (the original widths, so derived
  attributes such as a BERT head size stay right, and so the stock config validates); they
  are what config.json holds;
* ``config``: the true values of those keys, set on the config after ``__init__``;
* ``params``: parameter name -> shape, for every parameter whose shape differs from ``init``;
* ``attrs``: module path -> {attribute: value} (head counts, kept-head indices, ...);
* ``skips``: module path -> {"kind": ..., ...}, sublayers replaced by :class:`Skipped` modules.
"""
from __future__ import annotations

import torch
import transformers
from torch import nn


#: Keywords under which transformers versions pass the KV cache to a layer or an attention
#: module: ``past_key_values`` (5.0-5.23), ``cache`` (5.24 on), ``past_key_value`` (4.x).
CACHE_KEYWORDS = ("cache", "past_key_values", "past_key_value", "layer_past")


def find_cache(kwargs: dict):
    """The KV cache passed to a module, whatever keyword this transformers version uses.

    Looks at the known keywords first, then at any argument that behaves like a cache (has
    ``update`` and ``get_seq_length``), so a future rename does not silently drop it.
    """
    for key in CACHE_KEYWORDS:
        if kwargs.get(key) is not None:
            return kwargs[key]
    for value in kwargs.values():
        if hasattr(value, "get_seq_length") and hasattr(value, "update"):
            return value
    return None


class Skipped(nn.Module):
    """A removed sublayer: passes the residual stream through with no matmul.

    ``kind`` selects the calling convention of the module it replaces:

    * ``norm``: a pre-norm that fed only the removed sublayer; returns its input;
    * ``decoder_attention`` / ``decoder_mlp`` (LLaMA family) and ``t5_ff``: return what is
      added to the residual: zero, or the constant output bias if the sublayer had one but kept
      no head / neuron;
    * ``bert_attention`` / ``bert_output`` / ``mpnet_attention``: post-norm blocks:
      ``LayerNorm(x + bias)``; ``bert_intermediate`` returns its input (the skipped
      ``bert_output`` ignores it);
    * ``t5_self`` / ``t5_cross``: T5 attention sublayers: return the hidden state unchanged and
      keep the stack's relative position bias (the first block owns it) flowing to later blocks.
    """

    lmprune_skipped = True

    def __init__(self, kind: str, hidden: int = 0, bias: bool = False, eps: float = 1e-12,
                 head_dim: int = 0, layer_idx: int | None = None, position_bias: dict | None = None):
        super().__init__()
        self.options = {"kind": kind, "hidden": hidden, "bias": bias, "eps": eps,
                        "head_dim": head_dim, "layer_idx": layer_idx, "position_bias": position_bias}
        self.kind, self.head_dim, self.layer_idx = kind, head_dim, layer_idx
        self.bias = nn.Parameter(torch.zeros(hidden)) if bias else None
        if kind in ("bert_attention", "bert_output"):
            holder = nn.Module()
            holder.LayerNorm = nn.LayerNorm(hidden, eps=eps)
            self.output = holder if kind == "bert_attention" else None
            if kind == "bert_output":
                self.LayerNorm = holder.LayerNorm
        if kind == "mpnet_attention":  # MPNetAttention keeps its norm as ``LayerNorm``
            self.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        if position_bias is not None:  # T5 first-block self attention: keep the bias table
            holder = nn.Module()
            holder.relative_attention_bias = nn.Embedding(position_bias["buckets"], position_bias["heads"])
            self.SelfAttention = holder
            self.position_bias_config = dict(position_bias)

    def _residual_delta(self, x):
        return self.bias.to(x.dtype) if self.bias is not None else x.new_zeros(())

    def forward(self, hidden_states=None, *args, **kwargs):
        x = hidden_states if hidden_states is not None else kwargs.get("hidden_states")
        kind = self.kind
        if kind in ("norm", "bert_intermediate"):
            return x
        if kind == "decoder_attention":
            self._touch_cache(x, find_cache(kwargs))
            return self._residual_delta(x), None
        if kind == "decoder_mlp":
            return self._residual_delta(x)
        if kind == "t5_ff":
            return x
        if kind == "bert_attention":
            return self.output.LayerNorm(x + self._residual_delta(x)), None
        if kind == "mpnet_attention":
            return (self.LayerNorm(x + self._residual_delta(x)),)
        if kind == "bert_output":
            residual = args[0] if args else kwargs["input_tensor"]
            return self.LayerNorm(residual + self._residual_delta(residual))
        if kind == "t5_cross":
            return x, None, None
        if kind == "t5_self":
            return x, self._t5_position_bias(x, find_cache(kwargs)), None
        raise ValueError(f"unknown skipped-sublayer kind {kind!r}")

    def _touch_cache(self, x, cache):
        """Record this layer's sequence length in the KV cache with a 1-head, width-1 stub.

        Generation reads the cache length (positions, mask sizes) from a layer, often layer 0;
        the stub keeps it right when that layer's attention was removed, for one float per
        token. (An entry with zero heads would not do: transformers reports length 0 for an
        empty tensor.)
        """
        if cache is None or self.layer_idx is None:
            return
        if hasattr(cache, "self_attention_cache"):
            cache = cache.self_attention_cache
        stub = x.new_zeros(x.shape[0], 1, x.shape[1], 1)
        cache.update(stub, stub, self.layer_idx)

    def _t5_position_bias(self, x, cache):
        if not hasattr(self, "SelfAttention"):
            return None
        seen = 0
        if cache is not None and self.layer_idx is not None:
            self_cache = getattr(cache, "self_attention_cache", cache)
            seen = self_cache.get_seq_length(self.layer_idx)
            self._touch_cache(x, cache)
        cfg = self.position_bias_config
        from transformers.models.t5.modeling_t5 import T5Attention

        q = torch.arange(seen, seen + x.shape[1], device=x.device)[:, None]
        k = torch.arange(seen + x.shape[1], device=x.device)[None, :]
        buckets = T5Attention._relative_position_bucket(
            k - q, bidirectional=not cfg["is_decoder"], num_buckets=cfg["buckets"],
            max_distance=cfg["max_distance"])
        values = self.SelfAttention.relative_attention_bias(buckets)
        return values.permute([2, 0, 1]).unsqueeze(0)


def _t5_heads_pre_hook(module, args, kwargs):
    """T5 passes one position-bias tensor (all original heads) from block to block; a block
    whose heads were pruned takes its own heads' slice of it and passes the full one on."""
    kept = torch.as_tensor(module.lmprune_kept_heads)
    bias = kwargs.get("position_bias")
    module._lmprune_full_bias = None
    if bias is None and module.has_relative_attention_bias:
        hidden = args[0] if args else kwargs["hidden_states"]
        cache = find_cache(kwargs)
        seen = 0
        if cache is not None:
            seen = getattr(cache, "self_attention_cache", cache).get_seq_length(module.layer_idx)
        bias = module.compute_bias(hidden.shape[1], hidden.shape[1] + seen, device=hidden.device,
                                   past_seen_tokens=seen)
    if bias is not None:
        module._lmprune_full_bias = bias
        kwargs["position_bias"] = bias[:, kept.to(bias.device)] if bias.shape[1] > 1 else bias
    return args, kwargs


def _t5_heads_post_hook(module, args, kwargs, output):
    full = module._lmprune_full_bias
    module._lmprune_full_bias = None
    return (output[0], full) + tuple(output[2:])


def _kept_index(module, like: torch.Tensor) -> torch.Tensor:
    """``lmprune_kept_heads`` as an index tensor on ``like``'s device, cached until the kept
    heads (pruning again) or the device change, so a forward copies nothing to the device."""
    kept = module.lmprune_kept_heads
    cached = getattr(module, "_lmprune_kept_index", None)
    if cached is None or cached[0] is not kept or cached[1].device != like.device:
        cached = (kept, torch.as_tensor(kept, device=like.device))
        module._lmprune_kept_index = cached
    return cached[1]


def _mpnet_heads_pre_hook(module, args, kwargs):
    """MPNet's encoder computes one relative-position bias over all original heads and adds it
    to every layer's scores; a layer whose heads were pruned takes its own heads' slice.

    ``MPNetAttention`` passes the bias to its ``attn`` positionally (third argument)."""
    if len(args) > 2 and args[2] is not None:
        args = args[:2] + (args[2][:, _kept_index(module, args[2])],) + args[3:]
    elif kwargs.get("position_bias") is not None:
        bias = kwargs["position_bias"]
        kwargs["position_bias"] = bias[:, _kept_index(module, bias)]
    return args, kwargs


#: attention class -> (pre hook, post hook or None) for modules with ``lmprune_kept_heads``.
_HEAD_HOOKS = {"T5Attention": (_t5_heads_pre_hook, _t5_heads_post_hook),
               "MPNetSelfAttention": (_mpnet_heads_pre_hook, None)}


def _head_hooks_for(module: nn.Module):
    for cls in type(module).__mro__:
        if cls.__name__ in _HEAD_HOOKS:
            return _HEAD_HOOKS[cls.__name__]
    raise TypeError(f"{type(module).__name__} has pruned heads but lmprune knows no position-"
                    "bias hook for it")


def install_head_hooks(model: nn.Module) -> None:
    """Register the position-bias hooks on every T5 / MPNet attention with pruned heads
    (idempotent)."""
    for module in model.modules():
        if hasattr(module, "lmprune_kept_heads") and not getattr(module, "_lmprune_hooked", False):
            pre, post = _head_hooks_for(module)
            module.register_forward_pre_hook(pre, with_kwargs=True)
            if post is not None:
                module.register_forward_hook(post, with_kwargs=True)
            module._lmprune_hooked = True


def _submodule(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    """(parent, attribute) of ``path``, tolerating a missing base-model prefix."""
    parts = path.split(".")
    prefix = getattr(model, "base_model_prefix", "")
    if parts[0] == prefix and not hasattr(model, prefix):
        parts = parts[1:]
    parent = model.get_submodule(".".join(parts[:-1])) if len(parts) > 1 else model
    return parent, parts[-1]


def restructure(model: nn.Module, spec: dict) -> None:
    """Give a freshly built stock model the shapes described by ``spec`` (see module doc)."""
    for path, options in spec.get("skips", {}).items():
        parent, name = _submodule(model, path)
        old = getattr(parent, name)
        like = next(iter(old.parameters()), None) if isinstance(old, nn.Module) else None
        new = Skipped(**options)
        if like is not None:
            new.to(device=like.device, dtype=like.dtype)
        setattr(parent, name, new)
    for name, shape in spec.get("params", {}).items():
        parent, attr = _submodule(model, name)
        old = getattr(parent, attr)
        setattr(parent, attr, nn.Parameter(torch.empty(shape, dtype=old.dtype, device=old.device),
                                           requires_grad=old.requires_grad))
    for module in model.modules():  # keep size attributes in step with the new weights
        weight = getattr(module, "weight", None)
        if isinstance(module, nn.Linear):
            module.out_features, module.in_features = weight.shape
        elif isinstance(module, nn.Embedding):
            module.num_embeddings, module.embedding_dim = weight.shape
        elif isinstance(module, nn.LayerNorm) and weight is not None:
            module.normalized_shape = tuple(weight.shape)
    for path, attrs in spec.get("attrs", {}).items():
        parent, name = _submodule(model, path)
        module = getattr(parent, name)
        for key, value in attrs.items():
            setattr(module, key, tuple(value) if isinstance(value, list) else value)
    install_head_hooks(model)


def _make_pruned_class(base: type) -> type:
    def __init__(self, config, *args, **kwargs):
        # config.json holds the original widths (stock configs validate them, e.g. LLaMA wants
        # hidden_size % num_attention_heads == 0); the true widths are in spec["config"].
        spec = getattr(config, "lmprune_structure", None) or {}
        for key, value in spec.get("init", {}).items():
            setattr(config, key, value)
        base.__init__(self, config, *args, **kwargs)
        for key, value in spec.get("config", {}).items():
            setattr(config, key, value)
        restructure(self, spec)

    return type(f"Pruned{base.__name__}", (base,), {"__init__": __init__, "__module__": __name__})


_CLASSES: dict[str, type] = {}


def pruned_class(base_name: str) -> type:
    """The pruned-checkpoint class for a stock transformers class name (cached)."""
    if base_name not in _CLASSES:
        _CLASSES[base_name] = _make_pruned_class(getattr(transformers, base_name))
    return _CLASSES[base_name]


def __getattr__(name: str):
    # auto_map names classes "lmprune_pruned.Pruned<StockClass>"; build them on demand.
    if name.startswith("Pruned"):
        return pruned_class(name[len("Pruned"):])
    raise AttributeError(name)
