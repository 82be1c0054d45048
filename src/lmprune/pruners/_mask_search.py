"""Kwon et al.'s retraining-free mask search under a parameter budget.

Kwon, Kim, Mahoney, Hassoun, Keutzer, Gholami, "A Fast Post-Training Pruning Framework for
Transformers" (NeurIPS 2022), Section 4 (reference code, read for facts only:
github.com/WoosukKwon/retraining-free-pruning), in four steps:

1. gradients of the task loss with respect to all-ones head and neuron masks
   (:func:`collect_mask_gradients`);
2. the diagonal of the empirical Fisher information, ``I_u = sum_x g_u(x)^2``
   (:func:`fisher_importance`; reference ``prune/fisher.py``);
3. the mask search (reference ``prune/search.py``): rank heads and neurons globally by
   Fisher importance; for every number of kept heads ``h``, spend what the budget leaves on
   the most important neurons; keep the ``h`` whose masks lose the least Fisher importance
   (:func:`search_masks`);
4. the mask rearrangement (reference ``prune/rearrange.py``): within every layer, keep the
   same number of units but choose them to minimise the block-diagonal Fisher estimate of
   the loss increase, ``(1 - m)^T F (1 - m)`` with ``F = sum_x g(x) g(x)^T``
   (:func:`rearrange_masks`).

Kwon constrain FLOPs or latency; APT compares methods at equal *parameter* sparsity, so the
budget here is ``keep_ratio`` times the parameters of all heads and FFN neurons (embeddings
and task heads excluded), each unit costed by :mod:`lmprune.structures.counting`.
Grouped-query attention: a query head alone cannot be removed unless every key/value group
keeps the same number of query heads, so the search unit there is a whole key/value group
(its gradient is the sum of its query heads' gradients, exactly, because a group mask
multiplies each of them).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from lmprune.arch import ModelStructure, describe
from lmprune.errors import LmpruneError, MaskError
from lmprune.pruners.widths import round_kept_rows
from lmprune.structures.counting import head_cost, neuron_cost
from lmprune.structures.masks import Masks

#: Kwon's default calibration size (``--num_samples 2048`` in the reference main.py).
DEFAULT_SAMPLES = 2048
LossFn = Callable[[nn.Module, dict], torch.Tensor]


@dataclass
class MaskGradients:
    """Per-sample gradients of the loss with respect to all-ones masks."""

    heads: torch.Tensor  # [n_samples, n_attention_sites, num_heads]
    neurons: torch.Tensor  # [n_samples, n_ffn_sites, width]


def default_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """The model's own task loss, ``model(**batch).loss``."""
    loss = model(**batch).loss
    if loss is None:
        raise LmpruneError("model(**batch).loss is None: the batches need labels (or pass "
                           "loss_fn=lambda model, batch: ...)")
    return loss


def batch_size(batch: dict) -> int:
    sizes = {v.shape[0] for v in batch.values() if torch.is_tensor(v) and v.dim() > 0}
    if len(sizes) != 1:
        raise LmpruneError(f"a batch must be a dict of tensors with one batch size, got sizes "
                           f"{sorted(sizes)} for keys {sorted(batch)}")
    return sizes.pop()


def take_samples(batches: Iterable[dict], max_samples: int):
    """Yield the batches, the last one cut so that at most ``max_samples`` rows are used."""
    if max_samples < 1:
        raise LmpruneError(f"max_samples must be at least 1, got {max_samples}")
    seen = 0
    for batch in batches:
        size = batch_size(batch)
        keep = min(size, max_samples - seen)
        if keep < size:
            batch = {k: v[:keep] if torch.is_tensor(v) and v.dim() > 0 else v
                     for k, v in batch.items()}
        yield batch
        seen += keep
        if seen >= max_samples:
            return


def _check_uniform(structure: ModelStructure) -> None:
    heads = {s.num_heads for s in structure.attention}
    widths = {s.width for s in structure.ffn}
    if len(heads) > 1 or len(widths) > 1 or not heads or not widths:
        raise LmpruneError(
            f"Kwon's mask search needs every attention site to have the same number of heads and "
            f"every FFN site the same width (got heads {sorted(heads)}, widths {sorted(widths)}); "
            f"run it on the unpruned model")


@contextlib.contextmanager
def _per_sample_masks(model, structure, heads: torch.Tensor, neurons: torch.Tensor):
    """Hooks multiplying sample ``b``'s head contexts and FFN activations by ``heads[b, s]``
    and ``neurons[b, s]`` (the semantics of :func:`lmprune.structures.apply_masks`)."""
    handles = []

    def scale(mask, unit):
        def hook(module, args):
            x = args[0]
            if x.shape[0] != mask.shape[0]:
                raise LmpruneError(f"expected batch-first activations of {mask.shape[0]} rows at "
                                   f"{module.__class__.__name__}, got shape {tuple(x.shape)}")
            view = x.reshape(*x.shape[:-1], mask.shape[1], unit)
            m = mask.to(x.dtype).view(mask.shape[0], *([1] * (x.dim() - 2)), mask.shape[1], 1)
            return ((view * m).reshape(x.shape),) + args[1:]
        return hook

    try:
        for i, site in enumerate(structure.attention):
            module = model.get_submodule(site.o)
            handles.append(module.register_forward_pre_hook(scale(heads[:, i], site.head_dim)))
        for i, site in enumerate(structure.ffn):
            module = model.get_submodule(site.out)
            handles.append(module.register_forward_pre_hook(scale(neurons[:, i], 1)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def frozen_eval(model: nn.Module):
    """Eval mode and no parameter gradients inside the block (both restored on exit)."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def collect_mask_gradients(model: nn.Module, batches: Iterable[dict],
                           structure: ModelStructure | None = None,
                           max_samples: int = DEFAULT_SAMPLES, loss_fn: LossFn | None = None,
                           progress: bool = False) -> MaskGradients:
    """Per-sample gradients of the loss w.r.t. all-ones head and neuron masks (mask search).

    Each batch gets one mask row per sample, so one forward and backward pass gives every
    sample's gradient: for a loss that is a mean over the batch (classification, regression,
    QA), ``batch_size * dL/dm_b`` is exactly sample ``b``'s gradient. For a token-mean language
    modelling loss it is sample ``b``'s gradient weighted by its share of the batch's tokens.
    (Kwon's reference code uses one gradient per mini-batch of 32 instead; the paper defines
    the Fisher over samples, which is what this computes.) Parameters get no ``.grad``.
    """
    structure = structure or describe(model)
    _check_uniform(structure)
    loss_fn = loss_fn or default_loss
    device = next(model.parameters()).device
    n_heads, width = structure.attention[0].num_heads, structure.ffn[0].width
    head_rows, neuron_rows = [], []
    bar = tqdm(total=max_samples, desc="mask gradients", disable=not progress)
    with frozen_eval(model), bar:
        for batch in take_samples(batches, max_samples):
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            size = batch_size(batch)
            opts = dict(device=device, requires_grad=True)
            heads = torch.ones(size, len(structure.attention), n_heads, **opts)
            neurons = torch.ones(size, len(structure.ffn), width, **opts)
            with _per_sample_masks(model, structure, heads, neurons):
                loss = loss_fn(model, batch)
            g_heads, g_neurons = torch.autograd.grad(loss, [heads, neurons], allow_unused=True)
            head_rows.append(_or_zeros(g_heads, heads).cpu() * size)
            neuron_rows.append(_or_zeros(g_neurons, neurons).cpu() * size)
            bar.update(size)
    if not head_rows:
        raise LmpruneError("collect_mask_gradients got no batches; pass at least one batch")
    return MaskGradients(torch.cat(head_rows), torch.cat(neuron_rows))


def _or_zeros(grad, like):
    return torch.zeros_like(like).detach() if grad is None else grad.detach().float()


def fisher_importance(grads: MaskGradients) -> tuple[torch.Tensor, torch.Tensor]:
    """Diagonal empirical Fisher, ``I_u = sum_x (dL(x)/dm_u)^2`` (Kwon, "Mask Search")."""
    return grads.heads.pow(2).sum(0), grads.neurons.pow(2).sum(0)


def _ranked(importance: torch.Tensor, cost) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Units sorted by importance (descending) with cumulative importance and cost from 0."""
    imp = importance.detach().double().cpu()
    cost = torch.as_tensor(cost, dtype=torch.float64).expand_as(imp).flatten()
    if (cost <= 0).any():
        raise LmpruneError("every unit's cost must be positive")
    order = torch.argsort(imp.flatten(), descending=True, stable=True)
    zero = torch.zeros(1, dtype=torch.float64)
    cum_importance = torch.cat([zero, imp.flatten()[order].cumsum(0)])
    return order, cum_importance, torch.cat([zero, cost[order].cumsum(0)])


def search_masks(head_importance: torch.Tensor, neuron_importance: torch.Tensor,
                 head_cost: float | torch.Tensor, neuron_cost: float | torch.Tensor,
                 budget: float) -> dict[str, torch.Tensor]:
    """Kwon's mask search with a parameter budget (reference ``prune/search.py:search_mac``).

    For every number ``h >= 1`` of kept heads (the ``h`` most important, ranked globally), the
    budget left after the heads goes to the most important neurons, taken in order while they
    fit; the ``h`` keeping the largest total Fisher importance wins, i.e. the masks that
    minimise the importance of the pruned units. Ties go to more kept heads. With uniform costs
    per kind (as here) this is the optimum. Costs broadcast against the importance tensors
    (a float, or one value per site as ``[sites, 1]``).
    """
    h_order, h_imp, h_cost = _ranked(head_importance, head_cost)
    n_order, n_imp, n_cost = _ranked(neuron_importance, neuron_cost)
    left = budget - h_cost[1:]  # budget left for neurons with h = 1, 2, ... heads
    if left[0] < 0:
        raise LmpruneError(f"the budget of {budget:.0f} parameters does not fit even the "
                           f"cheapest kept head ({float(h_cost[1]):.0f}); raise keep_ratio")
    n_kept = torch.searchsorted(n_cost, left.clamp(min=0), right=True) - 1
    never = torch.tensor(-torch.inf, dtype=torch.float64)
    total = torch.where(left >= 0, h_imp[1:] + n_imp[n_kept], never)
    best = int(torch.nonzero(total == total.max()).max())  # last maximum: more heads on ties
    heads = torch.zeros(head_importance.numel())
    heads[h_order[:best + 1]] = 1.0
    neurons = torch.zeros(neuron_importance.numel())
    neurons[n_order[:int(n_kept[best])]] = 1.0
    return {"heads": heads.view(head_importance.shape),
            "neurons": neurons.view(neuron_importance.shape)}


def estimated_loss_increase(mask: torch.Tensor, grads: torch.Tensor) -> float:
    """Block-diagonal Fisher estimate of one site's loss increase (Kwon, "Mask Rearrangement"):
    ``(1 - m)^T F (1 - m) = sum_x (sum_{u pruned} g_u(x))^2``; ``grads`` is ``[n, units]``."""
    pruned = (mask.flatten() == 0).double().to(grads.device)
    return float((grads.double() @ pruned).pow(2).sum())


def _greedy_rearrange(mask: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Kwon's greedy rearrangement on one site, started from ``mask``'s pruned set.

    Kept units are visited from the least to the most Fisher-important; each joins the pruned
    set and then the pruned unit whose removal leaves the smallest ``||sum g||^2`` leaves it
    again (possibly the one just added), so the objective never increases. ``c_j = s . g_j``
    (``s`` the pruned gradients' sum) is kept up to date from the Gram matrix ``F``.
    """
    pruned = (mask.flatten() == 0).to(grads.device)
    if pruned.all() or not pruned.any():
        return mask.clone()
    gram = grads.T @ grads  # F, [units, units]
    c = gram[:, pruned].sum(1)
    candidates = torch.nonzero(~pruned).flatten()
    candidates = candidates[torch.argsort(gram.diagonal()[candidates], stable=True)]
    for a in candidates.tolist():
        pruned[a] = True
        c += gram[:, a]
        after = torch.where(pruned, gram.diagonal() - 2 * c, torch.tensor(torch.inf, dtype=c.dtype))
        r = int(after.argmin())
        pruned[r] = False
        c -= gram[:, r]
    return (~pruned).to(mask.dtype).view(mask.shape).cpu()


def rearrange_masks(selection: dict[str, torch.Tensor], grads: MaskGradients,
                    device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Kwon's mask rearrangement: per site, same count, better units.

    ``selection`` is :func:`search_masks`' output; ``grads`` the per-sample gradients behind
    it (same unit layout). Computed in float64 on ``device`` (default: the gradients' device).
    """
    device = device or grads.heads.device
    out = {}
    for kind, g in (("heads", grads.heads), ("neurons", grads.neurons)):
        mask = selection[kind]
        if tuple(mask.shape) != tuple(g.shape[1:]):
            raise MaskError(f"{kind} selection has shape {tuple(mask.shape)} but the gradients "
                            f"are for {tuple(g.shape[1:])}")
        out[kind] = torch.stack([_greedy_rearrange(mask[s], g[:, s].to(device, torch.float64))
                                 for s in range(mask.shape[0])]).to(mask.dtype)
    return out


def to_masks(selection: dict[str, torch.Tensor], structure: ModelStructure) -> Masks:
    """``{"heads": [sites, heads], "neurons": [sites, width]}`` -> :class:`Masks` by site name."""
    masks = Masks()
    for kind, sites, target in (("heads", structure.attention, masks.heads),
                                ("neurons", structure.ffn, masks.neurons)):
        tensor = selection[kind]
        if tensor.shape[0] != len(sites):
            raise MaskError(f"{kind} selection has {tensor.shape[0]} rows, the model has "
                            f"{len(sites)} sites ({', '.join(s.name for s in sites)})")
        for row, site in zip(tensor, sites):
            target[site.name] = row.detach().float().cpu().clone()
    masks.validate(structure)
    return masks


def _group_size(structure: ModelStructure) -> int:
    sizes = {s.group_size for s in structure.attention}
    if len(sizes) > 1:
        raise LmpruneError(f"attention sites have different query-heads-per-group {sorted(sizes)}")
    return sizes.pop()


def search_units(model: nn.Module, structure: ModelStructure, grads: MaskGradients):
    """Gradients and per-unit costs of the search units: query heads for multi-head attention,
    whole key/value groups for grouped-query attention; FFN neurons."""
    group = _group_size(structure)
    heads = grads.heads
    kind = "head" if group == 1 else "kv_group"
    if group > 1:
        heads = heads.view(*heads.shape[:2], -1, group).sum(-1)
    h_cost = torch.tensor([[head_cost(model, s)[kind]] for s in structure.attention],
                          dtype=torch.float64)
    n_cost = torch.tensor([[neuron_cost(model, s)] for s in structure.ffn], dtype=torch.float64)
    return MaskGradients(heads, grads.neurons), h_cost, n_cost, group


def mask_search(model: nn.Module, batches: Iterable[dict], keep_ratio: float,
                structure: ModelStructure | None = None, max_samples: int = DEFAULT_SAMPLES,
                rearrange: bool = True, progress: bool = False,
                loss_fn: LossFn | None = None, round_to: int = 1) -> Masks:
    """Gradients -> Fisher -> search -> rearrangement -> binary :class:`Masks` (Kwon, Sec. 4).

    The budget is ``keep_ratio`` times the parameters of every head and FFN neuron.
    ``round_to > 1`` rounds each FFN's kept neurons to a multiple of it after the search, by
    APT's rule (:func:`lmprune.pruners.widths.round_kept_rows`; never more parameters), before
    the rearrangement picks which neurons fill those counts.
    """
    if not 0.0 < keep_ratio <= 1.0:
        raise LmpruneError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    structure = structure or describe(model)
    grads = collect_mask_gradients(model, batches, structure, max_samples, loss_fn, progress)
    units, h_cost, n_cost, group = search_units(model, structure, grads)
    head_imp, neuron_imp = fisher_importance(units)
    total = float((h_cost * head_imp.shape[1]).sum() + (n_cost * neuron_imp.shape[1]).sum())
    selection = search_masks(head_imp, neuron_imp, h_cost, n_cost, keep_ratio * total)
    if round_to > 1:
        selection["neurons"] = round_kept_rows(selection["neurons"], neuron_imp, n_cost[:, 0],
                                               round_to)
    if rearrange:
        device = next(model.parameters()).device
        selection = rearrange_masks(selection, units, device)
    selection["heads"] = selection["heads"].repeat_interleave(group, dim=1)
    return to_masks(selection, structure)
