"""Activation recomputation (gradient checkpointing) for ``lmprune train`` and ``recover``.

``train.gradient_checkpointing=true`` (``lmprune train --gradient-checkpointing``;
``recovery.gradient_checkpointing=true`` for LoRA recovery) keeps only
each transformer layer's input during the forward pass and recomputes the layer's activations
when backward reaches it: each layer runs forward once more per step, and the activations kept
at a time are one layer's plus every layer's input, instead of every layer's. It uses
transformers' own mechanism (``PreTrainedModel.gradient_checkpointing_enable``, the layers the
stock modeling code marks for it) with PyTorch's non-reentrant checkpoint, which restores the
random-number state for the recomputed pass (the same dropout masks) and replays autocast: a
step computes what it computes without it. What the methods hook into a layer (APT's masks and
salience, CoFi's gates) must run again in the recomputed pass, so a method enters those hooks
through :meth:`~lmprune.training.method.TrainMethod.forward_scope`, which keeps them until the
loop's backward is done; the salience a recomputed pass records gets no gradient and is dropped
(:class:`lmprune.scorers.apt_salience.SalienceCollector` forms scores only from calls whose
gradient arrived).

Architectures whose transformers code has no gradient checkpointing (MPNet, as of
transformers 5.24) are refused with the reason, rather than trained without it.
"""
from __future__ import annotations

from torch import nn

from lmprune.errors import LmpruneError


def _pretrained(model: nn.Module) -> nn.Module:
    """The transformers model under a PEFT wrapper (or ``model`` itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def supports_recompute(model: nn.Module) -> bool:
    """Whether transformers can checkpoint ``model``'s layers."""
    return bool(getattr(_pretrained(model), "supports_gradient_checkpointing", False))


def require_recompute(model: nn.Module, setting: str = "train.gradient_checkpointing") -> None:
    """Raise :class:`LmpruneError` naming ``setting`` when transformers has no gradient
    checkpointing for ``model``'s architecture."""
    base = _pretrained(model)
    if not supports_recompute(base):
        model_type = getattr(getattr(base, "config", None), "model_type", type(base).__name__)
        raise LmpruneError(
            f"{setting}: transformers has no gradient checkpointing for {model_type!r} models "
            f"({type(base).__name__}); train without it ({setting}=false), with smaller "
            f"batches or shorter sequences")


def enable_recompute(model: nn.Module, setting: str = "train.gradient_checkpointing") -> None:
    """Turn on gradient checkpointing (non-reentrant) for ``model``'s training forwards
    (:func:`require_recompute` first)."""
    require_recompute(model, setting)
    base = _pretrained(model)
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x's name
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def disable_recompute(model: nn.Module) -> None:
    """Turn gradient checkpointing off again (a trained model leaves as it came)."""
    base = _pretrained(model)
    if not recomputing(base):
        return
    if hasattr(base, "activation_checkpointing_disable"):
        base.activation_checkpointing_disable()
    else:
        base.gradient_checkpointing_disable()


def recomputing(model: nn.Module) -> bool:
    """Whether gradient checkpointing is on for ``model``."""
    base = _pretrained(model)
    name = ("is_activation_checkpointing" if hasattr(type(base), "is_activation_checkpointing")
            else "is_gradient_checkpointing")
    return bool(getattr(base, name, False))
