"""First- and second-order Taylor importance of LLM-Pruner (Ma et al., NeurIPS 2023, Sec. 3.2).

For a weight W with loss gradient G (element-wise products, sums over a group's elements of W):

* ``vector``   (Eq. 3, coarse): ``|Σ G·W|`` — the first-order change of the loss when the
  group's whole weight vector in W is zeroed;
* ``element1`` (Eq. 4-5, first order): ``Σ |G·W|``;
* ``element2`` (Eq. 4-5, with the Hessian diagonal): ``Σ |G·W − ½ · W·H·W|`` where
  ``H = (1/N) Σ_s g_s²`` is the Fisher approximation of the Hessian diagonal from the squared
  per-sample gradients g_s (LLM-Pruner's ``acc_grad``, its ``param_mix`` criterion).

The group importance then aggregates the per-tensor importances of the group's coupled tensors
(``sum``, ``mean``, ``max``, ``prod`` or ``last``; see :mod:`lmprune.scorers.coupling` for the
coupling and the tensor order). Layer, attention and FFN sublayer scores treat a whole tensor
as one group and aggregate over all the layer's (sublayer's) weights.

Exact choices (the paper leaves them open; LLM-Pruner's code fixes them):

* G is the gradient of the *mean* next-token loss over all N samples (LLM-Pruner backpropagates
  ``model(batch, labels=batch).loss`` over the whole batch), i.e. ``G = (1/N) Σ_s g_s`` where
  g_s is the gradient of sample s's mean loss (all samples have the same length). Ranking by
  ``vector``/``element1`` does not depend on that 1/N; ``element2`` mixes G with H, so the
  scale matters and is LLM-Pruner's.
* ``vector`` takes |·| of the sum over *all* the group's elements in a tensor (the paper's
  Eq. 3 with W_i = the group's slice). LLM-Pruner's code takes |·| per row/column and then
  sums the ``head_dim`` rows of a head, which differs for heads and key/value groups only.
* Biases are not scored (as in LLM-Pruner).

Memory (the point of this module): gradients are consumed by per-weight hooks
(:mod:`lmprune.scorers.grad_accumulator`) and freed at once, and only the weights the
requested kinds need (within ``layer_range``) get gradients at all.

* ``vector``/``element1`` with ``batch_size=None`` (the default, one backward over the N
  samples as LLM-Pruner does): no per-weight buffer at all — each weight is scored inside its
  hook and only per-group reductions are kept. Peak = weights + the batch's activations +
  the few gradients autograd holds in flight + fp32 temporaries for one matrix (3x its size).
* ``element2`` adds N per-sample backward passes (activations of one sample) and one fp32
  buffer per watched weight for H.
* ``batch_size < N`` (less activation memory) adds one fp32 buffer per watched weight for ΣG.

For LLaMA-7B (6.5B parameters in the 32 layers, bf16 weights 13.5 GB): element1 needs
13.5 GB + activations of 10x128 tokens (a few GB) + < 2 GB transient; element2 adds
26 GB of fp32 H (all layers; 21 GB for LLM-Pruner's layers 4..29), i.e. about 45 GB in all;
a full copy of the gradients is never held. Measured on smollm2-135m (fp32, 10x128 tokens,
all kinds, peak RSS): a plain ``loss.backward()`` 3.8 GB; element1 3.5 GB; all three metrics
4.4 GB; element1 with ``batch_size=2`` 2.5 GB.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from lmprune.arch import ModelStructure
from lmprune.errors import LmpruneError
from lmprune.pruners.selection import Scores
from lmprune.scorers.coupling import CoupledTensor, check_aggregation, coupled_tensors, per_unit
from lmprune.scorers.grad_accumulator import (FloatSums, LossFn, backward_passes,
                                              causal_lm_loss, watch_gradients)
from lmprune.scorers.importances import GroupImportances

METRICS = ("vector", "element1", "element2")
DEFAULT_KINDS = ("heads", "kv_groups", "neurons", "hidden", "layers")


def taylor_scores(model: nn.Module, structure: ModelStructure, samples: torch.Tensor,
                  importance: str = "element1", aggregation: str = "sum",
                  kinds: Iterable[str] = DEFAULT_KINDS, **options) -> Scores:
    """Taylor importance of every group of ``kinds`` (higher = more important).

    ``samples`` [N, L] are calibration token ids; ``options`` are those of
    :func:`taylor_metrics` (``layer_range``, ``batch_size``, ``loss_fn``, ``progress``).
    Asking for ``layers`` also gives ``attention`` and ``ffn`` sublayer scores.
    """
    return taylor_metrics(model, structure, samples, (importance,), aggregation, kinds,
                          **options)[importance]


def taylor_metrics(model: nn.Module, structure: ModelStructure, samples: torch.Tensor,
                   metrics: Iterable[str] = METRICS, aggregation: str = "sum",
                   kinds: Iterable[str] = DEFAULT_KINDS, layer_range: list[int] | None = None,
                   batch_size: int | None = None, loss_fn: LossFn | None = None,
                   progress: bool = True) -> dict[str, Scores]:
    """Every requested metric from one round of gradient passes: ``{metric: Scores}``.

    ``layer_range`` [start, end) limits the scored sites (and the weights that get
    gradients); ``batch_size`` splits the first-order pass into micro-batches (None: one
    batch of all N samples); ``loss_fn(model, ids) -> loss`` replaces the causal-LM loss.
    """
    metrics = _check_metrics(metrics)
    check_aggregation(aggregation)
    samples = _check_samples(samples)
    if batch_size is not None and batch_size < 1:
        raise LmpruneError(f"batch_size must be a positive number of samples, got {batch_size}")
    tensors = coupled_tensors(model, structure, kinds, layer_range)
    if not tensors:
        raise LmpruneError(f"nothing to score: no weight belongs to kinds {tuple(kinds)} "
                           f"within layer_range {layer_range}")
    params = [t.param for t in tensors]
    loss_fn = loss_fn or causal_lm_loss
    n = len(samples)
    hessian = None
    if "element2" in metrics:  # H = (1/N) Σ_s g_s², one backward per sample
        hessian = FloatSums(transform=torch.square, scale=1.0 / n)
        with watch_gradients(model, params, hessian):
            backward_passes(model, samples, 1, loss_fn, "taylor: per-sample gradients",
                            progress, share=False)
    results = {m: GroupImportances() for m in metrics}
    scored: set[int] = set()

    def score(index: int, grad: torch.Tensor) -> None:
        hess = hessian.pop(index) if hessian is not None else None
        _score_tensor(tensors[index], index, grad, hess, results)
        scored.add(index)

    batch = n if batch_size is None else batch_size
    if batch >= n:  # one backward: each weight is scored in its hook, no gradient buffer
        with watch_gradients(model, params, lambda i, p, g: score(i, g)):
            backward_passes(model, samples, n, loss_fn, "taylor: gradient", progress)
    else:
        sums = FloatSums()
        with watch_gradients(model, params, sums):
            backward_passes(model, samples, batch, loss_fn, "taylor: gradient", progress)
        for index in list(sums.buffers):
            score(index, sums.pop(index))
    for index, tensor in enumerate(tensors):  # weights the loss does not depend on
        if index not in scored:
            score(index, torch.zeros_like(tensor.param, dtype=_score_dtype(tensor.param)))
    return {m: results[m].scores(structure, aggregation) for m in metrics}


def salience(metric: str, weight: torch.Tensor, grad: torch.Tensor,
             hessian: torch.Tensor | None) -> torch.Tensor:
    """Element-wise salience of one tensor (fp32); ``vector`` stays signed (|·| comes after
    the sum over a group's elements)."""
    first = grad * weight
    if metric == "vector":
        return first
    if metric == "element1":
        return first.abs()
    if hessian is None:
        hessian = torch.zeros_like(weight)
    return (first - 0.5 * weight * hessian * weight).abs()


def _score_dtype(param: torch.Tensor) -> torch.dtype:
    """fp32 for bf16/fp16/fp32 weights, fp64 for fp64 ones (exact references in tests)."""
    return torch.promote_types(param.dtype, torch.float32)


def _score_tensor(tensor: CoupledTensor, index: int, grad: torch.Tensor,
                  hessian: torch.Tensor | None, results: dict[str, GroupImportances]) -> None:
    dtype = _score_dtype(tensor.param)
    weight, grad = tensor.param.detach().to(dtype), grad.to(dtype)
    hessian = hessian.to(dtype) if hessian is not None else None
    for metric, collected in results.items():
        values = salience(metric, weight, grad, hessian)
        cache: dict[int, torch.Tensor] = {}
        for position, piece in enumerate(tensor.slices):
            per_group = per_unit(values, piece, cache)
            if metric == "vector":  # |Σ g·w| over the group's elements (Eq. 3)
                per_group = per_group.abs()
            collected.add(index, position, piece, per_group)


def _check_metrics(metrics: Iterable[str]) -> tuple[str, ...]:
    metrics = tuple(dict.fromkeys(metrics))
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise LmpruneError(f"unknown Taylor metric(s) {unknown or '(none given)'}; valid: "
                           f"{', '.join(METRICS)}")
    return metrics


def _check_samples(samples: torch.Tensor) -> torch.Tensor:
    if not isinstance(samples, torch.Tensor) or samples.dim() != 2 or samples.numel() == 0:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples)
        raise LmpruneError(f"calibration samples must be a non-empty [N, L] tensor of token "
                           f"ids, got {shape}; build them with "
                           f"lmprune.data.calibration.build_calibration")
    if samples.dtype not in (torch.int32, torch.int64):
        raise LmpruneError(f"calibration samples must hold token ids (int64), got {samples.dtype}")
    return samples.long()
