"""Masks per group kind, applied in forward through hooks on stock modules.

A :class:`Masks` holds one tensor per site and kind. Values may be real (soft masks for
training: CoFi's L0 gates, APT's gradual masks) or binary (what physical removal needs).
``apply_masks`` registers hooks and removes them on exit; the mask tensors are used as they
are, so gradients flow into masks that require grad.

Semantics (the same ones physical removal implements, which is what the equivalence tests
check):

* heads / kv_groups: multiply each head's context vector before the output projection;
* neurons: multiply the FFN intermediate activation before the down projection;
* attention / ffn / layers: multiply the sublayer's output projection (bias included), so a
  zero leaves the residual path alone (post-norm models still apply their LayerNorm);
* hidden: zero the residual stream's channels: on entry, on every output projection, and in
  every norm, which also takes its statistics over the kept channels only.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from lmprune.arch import ModelStructure, describe
from lmprune.errors import MaskError

KINDS = ("heads", "kv_groups", "neurons", "attention", "ffn", "layers", "hidden")


@dataclass
class Masks:
    """Mask tensors keyed by site name (``hidden`` is one tensor for the whole model)."""

    heads: dict[str, torch.Tensor] = field(default_factory=dict)
    kv_groups: dict[str, torch.Tensor] = field(default_factory=dict)
    neurons: dict[str, torch.Tensor] = field(default_factory=dict)
    attention: dict[str, torch.Tensor] = field(default_factory=dict)
    ffn: dict[str, torch.Tensor] = field(default_factory=dict)
    layers: dict[str, torch.Tensor] = field(default_factory=dict)
    hidden: torch.Tensor | None = None

    @classmethod
    def ones(cls, structure: ModelStructure, kinds=KINDS, dtype=torch.float32) -> "Masks":
        """All-keep masks of the given kinds (a starting point for soft masks)."""
        masks = cls()
        for site in structure.attention:
            if "heads" in kinds:
                masks.heads[site.name] = torch.ones(site.num_heads, dtype=dtype)
            if "kv_groups" in kinds and site.group_size > 1:
                masks.kv_groups[site.name] = torch.ones(site.num_kv_heads, dtype=dtype)
            if "attention" in kinds:
                masks.attention[site.name] = torch.ones((), dtype=dtype)
        for site in structure.ffn:
            if "neurons" in kinds:
                masks.neurons[site.name] = torch.ones(site.width, dtype=dtype)
            if "ffn" in kinds:
                masks.ffn[site.name] = torch.ones((), dtype=dtype)
        if "layers" in kinds:
            masks.layers = {layer.name: torch.ones((), dtype=dtype) for layer in structure.layers}
        if "hidden" in kinds:
            masks.hidden = torch.ones(structure.hidden.size, dtype=dtype)
        return masks

    def items(self):
        """(kind, site, tensor) for every mask present."""
        for kind in KINDS[:-1]:
            for site, tensor in getattr(self, kind).items():
                yield kind, site, tensor
        if self.hidden is not None:
            yield "hidden", "", self.hidden

    def is_binary(self) -> bool:
        return all(bool(((t == 0) | (t == 1)).all()) for _, _, t in self.items())

    def validate(self, structure: ModelStructure, values: bool = True) -> None:
        """Raise MaskError listing every mask of an unknown site or a wrong shape, and (with
        ``values``) non-finite values. Reading values waits for the device: training loops
        that build their masks themselves check shapes only (``values=False``)."""
        problems = []
        expected = _expected_shapes(structure)
        for kind, site, tensor in self.items():
            key = (kind, site)
            if key not in expected:
                valid = sorted(s for k, s in expected if k == kind)
                problems.append(f"{kind} mask for unknown site {site!r} (valid: {', '.join(valid) or 'none'})")
            elif tuple(tensor.shape) != expected[key]:
                problems.append(f"{kind} mask for {site or 'the model'} has shape {tuple(tensor.shape)}, "
                                f"expected {expected[key]}")
            elif values and not torch.isfinite(tensor).all():
                problems.append(f"{kind} mask for {site or 'the model'} has non-finite values")
        if problems:
            raise MaskError("invalid masks:\n" + "\n".join(f"  - {p}" for p in problems)
                            + "\nBuild masks with Masks.ones(describe(model)) to get the right shapes.")


def _expected_shapes(structure: ModelStructure) -> dict[tuple[str, str], tuple[int, ...]]:
    shapes = {}
    for site in structure.attention:
        shapes[("heads", site.name)] = (site.num_heads,)
        shapes[("kv_groups", site.name)] = (site.num_kv_heads,)
        shapes[("attention", site.name)] = ()
    for site in structure.ffn:
        shapes[("neurons", site.name)] = (site.width,)
        shapes[("ffn", site.name)] = ()
    for layer in structure.layers:
        shapes[("layers", layer.name)] = ()
    shapes[("hidden", "")] = (structure.hidden.size,)
    return shapes


def effective_head_mask(masks: Masks, site) -> torch.Tensor | None:
    """Per-query-head mask: head mask times its key/value group's mask."""
    heads = masks.heads.get(site.name)
    kv = masks.kv_groups.get(site.name)
    if kv is not None:
        kv = kv.repeat_interleave(site.group_size)
        heads = kv if heads is None else heads * kv
    return heads


def _scalar(masks: Masks, kind: str, site) -> torch.Tensor | None:
    mine, layer = getattr(masks, kind).get(site.name), masks.layers.get(site.layer)
    if mine is None:
        return layer
    return mine if layer is None else mine * layer


@contextlib.contextmanager
def apply_masks(model: nn.Module, masks: Masks, structure: ModelStructure | None = None,
                check_values: bool = True):
    """Apply ``masks`` to ``model`` inside the ``with`` block (hooks are removed on exit).
    ``check_values=False``: check the masks' sites and shapes only, not that their values are
    finite (which reads them back from the device: a GPU sync per mask); for training loops
    that apply masks they made themselves on every forward pass."""
    structure = structure or describe(model)
    masks.validate(structure, values=check_values)
    handles = []
    get = model.get_submodule

    def pre(path, fn):
        handles.append(get(path).register_forward_pre_hook(lambda m, args: (fn(args[0]),) + args[1:]))

    def post(path, fn):
        handles.append(get(path).register_forward_hook(lambda m, args, out: fn(out)))

    try:
        for site in structure.attention:
            head = effective_head_mask(masks, site)
            if head is not None:
                pre(site.o, _head_scaler(head, site.num_heads, site.head_dim))
            scalar = _scalar(masks, "attention", site)
            if scalar is not None:
                post(site.o, lambda out, s=scalar: out * s.to(out))
        for site in structure.ffn:
            neurons = masks.neurons.get(site.name)
            if neurons is not None:
                pre(site.out, lambda x, m=neurons: x * m.to(x))
            scalar = _scalar(masks, "ffn", site)
            if scalar is not None:
                post(site.out, lambda out, s=scalar: out * s.to(out))
        if masks.hidden is not None:
            _hidden_hooks(model, structure, masks.hidden, handles)
        yield model
    finally:
        for handle in handles:
            handle.remove()


def _head_scaler(head: torch.Tensor, num_heads: int, head_dim: int):
    def scale(x):
        shape = x.shape
        x = x.reshape(*shape[:-1], num_heads, head_dim) * head.to(x)[:, None]
        return x.reshape(shape)

    return scale


def _hidden_hooks(model, structure, hidden, handles):
    get = model.get_submodule
    for path in structure.hidden.entries + structure.hidden.writers:
        handles.append(get(path).register_forward_hook(
            lambda m, args, out, h=hidden: _mul_first(out, h)))
    for path in structure.hidden.norms:
        handles.append(get(path).register_forward_hook(
            lambda m, args, out, h=hidden: masked_norm(m, args[0], h)))


def _mul_first(out, hidden):
    if isinstance(out, tuple):
        return (out[0] * hidden.to(out[0]),) + out[1:]
    return out * hidden.to(out)


def masked_norm(module: nn.Module, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Recompute a LayerNorm / RMSNorm over the kept channels only, then apply the mask.

    A physically pruned norm averages over its d' remaining channels, not over all d with
    zeros, so this is what makes masked and pruned models agree.
    """
    keep = (hidden != 0).to(device=x.device, dtype=torch.float32)
    count = keep.sum()
    xf = x.to(torch.float32)
    if isinstance(module, nn.LayerNorm):
        mean = (xf * keep).sum(-1, keepdim=True) / count
        var = (((xf - mean) * keep) ** 2).sum(-1, keepdim=True) / count
        y = ((xf - mean) * torch.rsqrt(var + module.eps)).to(x.dtype)
        if module.weight is not None:
            y = y * module.weight
        if module.bias is not None:
            y = y + module.bias
    else:
        eps = getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6))
        var = (xf.pow(2) * keep).sum(-1, keepdim=True) / count
        y = module.weight * (xf * torch.rsqrt(var + eps)).to(module.weight.dtype)
    return y * hidden.to(y)
