"""A memory model of Taylor scoring, small enough to unit-test.

Peak memory of one backward pass over ``b`` samples of ``L`` tokens, with the scored weights
``W`` (their own dtype) and the per-element buffers of the pass plan
(:mod:`lmprune.scorers.taylor_passes`)::

    peak(b) ≈ bytes(model weights) + buffers(chunk) + activations(b) + transient

* ``buffers(chunk)`` is exact: 4 bytes (8 for fp64 weights) per element of each chunk weight,
  once for H (element2) and once for ΣG (micro-batched element1/element2);
* ``activations(b)`` grows linearly in ``b·L``. A *lower bound* is what backward must keep
  for the weight gradients: the input of every scored linear layer (inputs shared by q/k/v
  and by gate/up counted once), in the activations' dtype, plus the fp32 log-probabilities
  of the loss (``vocab`` per token). Norms, attention internals and SwiGLU products add more;
  :func:`activation_savings` uses only the bound, so a plan it allows can only do better;
* ``transient``: the gradient autograd is propagating and fp32 temporaries of one matrix.

Measured peaks for LLaMA shapes are in ``benchmarks/taylor_memory``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from lmprune.arch import ModelStructure
from lmprune.scorers.coupling import CoupledTensor


def _watched_paths(tensors: Sequence[CoupledTensor]) -> set[str]:
    return {t.name.rsplit(".", 1)[0] for t in tensors}


def saved_inputs_per_token(model: nn.Module, structure: ModelStructure,
                           tensors: Sequence[CoupledTensor]) -> int:
    """Activation elements per token that backward keeps for the scored linear layers
    (a lower bound; see the module docstring)."""
    watched = _watched_paths(tensors)
    elements = 0
    for site in structure.attention:
        if watched & {site.q, site.k, site.v}:
            elements += structure.hidden.size
        if site.o in watched:
            elements += site.num_heads * site.head_dim
    for site in structure.ffn:
        if watched & set(site.ins):
            elements += structure.hidden.size
        if site.out in watched:
            elements += site.width
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and any(t.param is head.weight for t in tensors):
        elements += structure.hidden.size
    return elements


def activation_bytes_lower_bound(model: nn.Module, structure: ModelStructure,
                                 tensors: Sequence[CoupledTensor], tokens: int) -> float:
    """At least this many activation bytes live during backward over ``tokens`` tokens."""
    param = tensors[0].param if tensors else next(model.parameters())
    vocab = getattr(model.config, "vocab_size", 0) or 0
    per_token = (saved_inputs_per_token(model, structure, tensors) * param.element_size()
                 + 4 * vocab)
    return float(per_token * tokens)


def activation_savings(model: nn.Module, structure: ModelStructure,
                       tensors: Sequence[CoupledTensor], n: int,
                       seq_len: int) -> Callable[[int], float]:
    """``batch -> bytes``: a lower bound on the activation memory that passes of ``batch``
    samples save over one pass of all ``n``."""
    per_sample = activation_bytes_lower_bound(model, structure, tensors, seq_len)
    return lambda batch: max(0, n - batch) * per_sample


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters (shared tensors once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * p.element_size()
    return total
