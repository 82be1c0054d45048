"""First- and second-order Taylor importance of LLM-Pruner (Ma et al., NeurIPS 2023, Sec. 3.2).

For a weight W with loss gradient G (element-wise products, sums over a channel's elements):

* ``vector``       (Eq. 3, coarse; LLM-Pruner's ``vectorize``): ``|Σ G·W|``;
* ``element1``     (Eq. 4-5, first order; ``param_first``): ``Σ |G·W|``;
* ``element2``     (Eq. 4-5 with the Hessian diagonal; ``param_mix``): ``Σ |G·W − ½·W·H·W|``;
* ``param_second`` (the second-order term alone; ``param_second``): ``Σ W·H·W``;

where ``H = (1/N) Σ_s g_s²`` is the Fisher approximation of the Hessian diagonal from the
squared per-sample gradients g_s (LLM-Pruner's ``acc_grad``).

**Reduction (``reduction="channel"``, LLM-Pruner's, the default).** Each coupled tensor gives
one value per channel (row or column index; :mod:`lmprune.scorers.coupling`): for ``vector``
the |·| is taken per row (``salience.sum(1).abs()``), for the element-wise criteria the sum of
|·| over the row. The coupled tensors are combined channel by channel by ``aggregation``
(``sum``, ``mean``, ``max``, ``prod`` or ``last``), and a head's (key/value group's)
``head_dim`` channels are then summed. ``reduction="group"`` (lmprune's earlier form) sums each
tensor over all of a group's elements first (for ``vector``: |Σ| over the whole head) and
combines the tensors per group. For neurons, hidden channels, sublayers and layers (one
channel per group) the two agree; for heads they differ in ``vector`` and in ``max``/``prod``.
Layer, attention and FFN sublayer scores treat a whole tensor as one channel.

Exact choices (the paper leaves them open; LLM-Pruner's code fixes them):

* G is the gradient of the *mean* next-token loss over all N samples (LLM-Pruner backpropagates
  ``model(batch, labels=batch).loss`` over the whole batch), i.e. ``G = (1/N) Σ_s g_s`` where
  g_s is the gradient of sample s's mean loss (all samples have the same length). Ranking by
  ``vector``/``element1`` does not depend on that 1/N; ``element2`` mixes G with H, so the
  scale matters and is LLM-Pruner's.
* Biases are not scored (as in LLM-Pruner).

Memory: gradients are consumed by per-weight hooks (:mod:`lmprune.scorers.grad_accumulator`)
and freed at once, only the weights the requested kinds need (within ``layer_range``) get
gradients, and per-element buffers (H for ``element2``; ΣG under micro-batching) are bounded
by streaming the weights in chunks of layers (:mod:`lmprune.scorers.taylor_passes`, with the
memory model in :mod:`lmprune.scorers.taylor_memory`). ``vector``, ``element1`` (one batch) and
``param_second`` never hold a per-element buffer. Measured peaks: ``benchmarks/taylor_memory``.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from lmprune.arch import ModelStructure
from lmprune.errors import LmpruneError
from lmprune.pruners.selection import Scores
from lmprune.scorers.coupling import (CoupledTensor, check_aggregation, check_reduction,
                                      coupled_tensors, index_sums)
from lmprune.scorers.grad_accumulator import LossFn, causal_lm_loss
from lmprune.scorers.importances import GroupImportances
from lmprune.scorers.taylor_memory import activation_savings
from lmprune.scorers.taylor_passes import NEEDS_G, plan_passes, run_passes

METRICS = ("vector", "element1", "element2", "param_second")
#: LLM-Pruner's names (``hf_prune.py --taylor``) for the same criteria.
LLM_PRUNER_NAMES = {"vectorize": "vector", "param_first": "element1", "param_mix": "element2",
                    "param_second": "param_second"}
DEFAULT_KINDS = ("heads", "kv_groups", "neurons", "hidden", "layers")


def taylor_scores(model: nn.Module, structure: ModelStructure, samples: torch.Tensor,
                  importance: str = "element1", aggregation: str = "sum",
                  kinds: Iterable[str] = DEFAULT_KINDS, **options) -> Scores:
    """Taylor importance of every group of ``kinds`` (higher = more important).

    ``samples`` [N, L] are calibration token ids; ``options`` are those of
    :func:`taylor_metrics` (``layer_range``, ``batch_size``, ``reduction``, ...).
    Asking for ``layers`` also gives ``attention`` and ``ffn`` sublayer scores.
    """
    name = LLM_PRUNER_NAMES.get(importance, importance)
    return taylor_metrics(model, structure, samples, (name,), aggregation, kinds,
                          **options)[name]


def taylor_metrics(model: nn.Module, structure: ModelStructure, samples: torch.Tensor,
                   metrics: Iterable[str] = METRICS, aggregation: str = "sum",
                   kinds: Iterable[str] = DEFAULT_KINDS, layer_range: list[int] | None = None,
                   batch_size: int | None = None, loss_fn: LossFn | None = None,
                   progress: bool = True, reduction: str = "channel",
                   buffer_fraction: float = 0.5) -> dict[str, Scores]:
    """Every requested metric from one round of gradient passes: ``{metric: Scores}``.

    ``layer_range`` [start, end) limits the scored sites (and the weights that get
    gradients); ``batch_size`` splits the gradient passes into micro-batches (None: one
    batch of all N samples); ``loss_fn(model, ids) -> loss`` replaces the causal-LM loss;
    ``reduction`` is ``channel`` (LLM-Pruner) or ``group`` (module docstring);
    ``buffer_fraction`` bounds per-element buffers relative to the scored weights' bytes.
    """
    metrics = _check_metrics(metrics)
    check_aggregation(aggregation)
    check_reduction(reduction)
    samples = _check_samples(samples)
    if batch_size is not None and batch_size < 1:
        raise LmpruneError(f"batch_size must be a positive number of samples, got {batch_size}")
    if not buffer_fraction > 0:
        raise LmpruneError(f"buffer_fraction must be positive, got {buffer_fraction}")
    tensors = coupled_tensors(model, structure, kinds, layer_range)
    if not tensors:
        raise LmpruneError(f"nothing to score: no weight belongs to kinds {tuple(kinds)} "
                           f"within layer_range {layer_range}")
    n, seq_len = samples.shape
    plan = plan_passes(tensors, metrics, n, batch_size, buffer_fraction,
                       activation_savings(model, structure, tensors, n, seq_len))
    results = {m: GroupImportances() for m in metrics}
    first = tuple(m for m in metrics if m in NEEDS_G)

    def on_sample(index: int, grad: torch.Tensor) -> None:
        if "param_second" in results:
            _score_second(tensors[index], index, grad, n, results["param_second"])

    def on_gradient(index: int, grad: torch.Tensor, hessian: torch.Tensor | None) -> None:
        _score_tensor(tensors[index], index, grad, hessian, {m: results[m] for m in first})

    run_passes(model, tensors, plan, samples, loss_fn or causal_lm_loss, on_sample, on_gradient,
               progress)
    return {m: results[m].scores(structure, aggregation, reduction) for m in metrics}


def salience(metric: str, weight: torch.Tensor, grad: torch.Tensor,
             hessian: torch.Tensor | None) -> torch.Tensor:
    """Element-wise salience of one tensor; ``vector`` stays signed (|·| comes after the sum
    over a channel's elements) and ``param_second`` takes ``hessian`` as H."""
    if metric == "param_second":
        return weight * hessian * weight
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
        _add_slices(tensor, index, salience(metric, weight, grad, hessian), collected,
                    signed=metric == "vector")


def _score_second(tensor: CoupledTensor, index: int, grad: torch.Tensor, n: int,
                  collected: GroupImportances) -> None:
    """One sample's share of ``Σ W·H·W``: linear in H, so it needs no per-element buffer."""
    dtype = _score_dtype(tensor.param)
    weight, grad = tensor.param.detach().to(dtype), grad.to(dtype)
    _add_slices(tensor, index, salience("param_second", weight, None, grad.square() / n),
                collected)


def _add_slices(tensor: CoupledTensor, index: int, values: torch.Tensor,
                collected: GroupImportances, signed: bool = False) -> None:
    cache: dict[int, torch.Tensor] = {}
    for position, piece in enumerate(tensor.slices):
        collected.add(index, position, piece, index_sums(values, piece, cache), signed=signed)


def _check_metrics(metrics: Iterable[str]) -> tuple[str, ...]:
    metrics = tuple(dict.fromkeys(LLM_PRUNER_NAMES.get(m, m) for m in metrics))
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise LmpruneError(f"unknown Taylor metric(s) {unknown or '(none given)'}; valid: "
                           f"{', '.join(METRICS)} (LLM-Pruner's names "
                           f"{', '.join(LLM_PRUNER_NAMES)} are accepted too)")
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
