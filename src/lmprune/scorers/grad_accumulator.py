"""Gradients of chosen weights, consumed the moment autograd has them, then freed.

Importance scorers need statistics of the loss gradient (sums of gradients, sums of squared
per-sample gradients), never the gradients themselves. :func:`watch_gradients` registers a
``register_post_accumulate_grad_hook`` on each watched weight: as soon as a weight's gradient
is complete in a backward pass the callback receives it, and ``.grad`` is set back to ``None``.
So at most the gradients autograd is still propagating are alive at once, plus whatever the
callback keeps (a per-element fp32 buffer, or only per-group reductions).

Only the watched weights require grad during the passes (no gradient is ever computed for the
rest), the model is put in eval mode (no dropout), and everything is restored on exit.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from lmprune.errors import LmpruneError

#: ``on_grad(index, param, grad)``: ``index`` is the weight's position in the watched list.
GradCallback = Callable[[int, nn.Parameter, torch.Tensor], None]
#: ``loss_fn(model, input_ids [B, L]) -> scalar loss`` (mean over the batch's tokens).
LossFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def watch_gradients(model: nn.Module, params: Sequence[nn.Parameter],
                    on_grad: GradCallback) -> Iterator[None]:
    """Inside the block, every backward pass hands each watched weight's gradient to
    ``on_grad`` and frees it; nothing else gets a gradient."""
    requires = {p: p.requires_grad for p in model.parameters()}
    stashed = {p: p.grad for p in model.parameters() if p.grad is not None}
    training = model.training
    handles = []
    try:
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
        for index, p in enumerate(params):
            p.requires_grad_(True)
            handles.append(p.register_post_accumulate_grad_hook(_hook(index, on_grad)))
        model.eval()
        with torch.enable_grad():
            yield
    finally:
        for handle in handles:
            handle.remove()
        for p, flag in requires.items():
            p.grad = stashed.get(p)
            p.requires_grad_(flag)
        model.train(training)


def _hook(index: int, on_grad: GradCallback):
    def hook(param: nn.Parameter) -> None:
        grad, param.grad = param.grad, None
        on_grad(index, param, grad)

    return hook


def causal_lm_loss(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of a causal LM (``labels = input_ids``; encoder-decoders
    reconstruct their input). Raises when the model computes no such loss (an encoder with a
    classification head, a bare base model)."""
    kwargs = {"input_ids": input_ids, "labels": input_ids}
    if getattr(model.config, "use_cache", None) is not None:
        kwargs["use_cache"] = False
    hint = (f"gradient-based importance needs a language-model head ({type(model).__name__} "
            f"has none usable with labels=input_ids): load the model with task=causal-lm, or "
            f"pass loss_fn=(model, input_ids) -> loss")
    try:
        loss = getattr(model(**kwargs), "loss", None)
    except (ValueError, TypeError) as exc:
        raise LmpruneError(f"{hint} ({exc})") from exc
    if loss is None:
        raise LmpruneError(hint)
    return loss


def backward_passes(model: nn.Module, samples: torch.Tensor, batch_size: int,
                    loss_fn: LossFn, desc: str, progress: bool = True,
                    share: bool = True) -> int:
    """Backward of ``loss_fn`` over ``samples`` in micro-batches of ``batch_size``.

    With ``share`` each micro-batch's loss is weighted by its share of the samples, so the
    gradients of all passes add up to the gradient of the mean loss over every sample
    (equal-length windows); without, each pass gives its own batch's gradient (per-sample
    gradients with ``batch_size=1``). Returns the number of passes.
    """
    device = next(model.parameters()).device
    total = len(samples)
    starts = range(0, total, batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress or len(starts) == 1, leave=False):
        batch = samples[start:start + batch_size].to(device)
        loss = loss_fn(model, batch)
        if not torch.isfinite(loss):
            raise LmpruneError(f"the calibration loss is {float(loss)} on samples "
                               f"{start}..{start + len(batch) - 1}; importance scores would be "
                               f"meaningless (try float32 weights or other samples)")
        (loss * (len(batch) / total) if share else loss).backward()
    return len(starts)


class FloatSums:
    """Running sums in fp32 (fp64 for fp64 weights), one buffer per watched weight,
    allocated on first use."""

    def __init__(self, transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 scale: float = 1.0):
        self.transform, self.scale = transform, scale
        self.buffers: dict[int, torch.Tensor] = {}

    def __call__(self, index: int, param: nn.Parameter, grad: torch.Tensor) -> None:
        value = grad.to(torch.promote_types(grad.dtype, torch.float32))
        if self.transform is not None:
            value = self.transform(value)
        if self.scale != 1.0:
            value = value * self.scale
        if index in self.buffers:
            self.buffers[index].add_(value)
        else:
            self.buffers[index] = value  # autograd hands over ownership of the gradient

    def pop(self, index: int) -> torch.Tensor | None:
        return self.buffers.pop(index, None)
