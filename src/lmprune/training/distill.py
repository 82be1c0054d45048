"""APT's self-distillation (Zhao, Hajishirzi & Cao, ICML 2024, Sec. 4.4 "Efficient Self-Knowledge
Distillation").

The teacher is the *same* model: the frozen pretrained backbone is shared, and only the adapter
tensors differ (the teacher uses a frozen snapshot of them). :func:`teacher_mode` swaps a
``state_dict``-like dict of adapter tensors into the model for the teacher's forward pass and
swaps the student's tensors back afterwards, so no second model is held in memory.

Loss (paper Eq. 6 and the line after it)::

    L = mu * L_distill + (1 - mu) * L_ft,   mu = min(1, (t - t_start) / (t_end - t_start))
    L_distill = w_pred * L_pred + w_layer * L_layer
    L_layer   = sum_i MSE(Tr(H_s^{phi(i)}), H_t^i)       (Tr: LoRA on identity, phi: layer map)
    L_pred    = KL(softmax(z_t / tau) || softmax(z_s / tau)) * tau^2

with (w_pred, w_layer) = (1, 0.9) for classification and (0.1, 0.9) for QA / summarization.
Facts checked against the authors' code (``ROIM1998/APT``, ``trainer/trainer_minus.py``,
``calculate_distillation_loss`` / ``calculate_layer_distillation_loss``); where we differ it is
said in the function's docstring.

Hidden states are the lists HF returns with ``output_hidden_states=True``: ``n_layers + 1``
tensors ``[batch, seq, d]`` with the embedding output first. Layer indices here are 0-based
indices of *layer outputs* (``hidden_states[1:]``); the embedding output is dropped
automatically when the list has ``n_layers + 1`` entries.
"""
from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmprune.errors import LmpruneError
from lmprune.tuners.saved_input import product_of_alive

__all__ = [
    "LayerTransform", "distill_weights", "layer_distillation", "match_layers", "mu",
    "output_hidden", "output_logits",
    "prediction_distillation", "snapshot_adapters", "teacher_layers", "teacher_mode",
    "total_loss", "TASK_TYPES",
]

#: (w_pred, w_layer) per task type (paper Sec. 4.4; APT's classification trainer multiplies the
#: KL by 10 and then by distill_ce_loss_alpha = 0.1, i.e. weight 1).
TASK_TYPES: dict[str, tuple[float, float]] = {
    "classification": (1.0, 0.9),
    "qa": (0.1, 0.9),
    "summarization": (0.1, 0.9),
}


def _wide(x: Tensor) -> Tensor:
    """``x`` in float32 at least (half precision is widened, float64 kept)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


# --------------------------------------------------------------------------- schedule and weights
def mu(step: int, prune_start: int, prune_end: int) -> float:
    """Distillation weight mu_t = min(1, (t - t_start) / (t_end - t_start)), 0 before t_start.

    APT's trainer computes ``min(1., (global_step - pruning_start_step) / (pruning_end_step -
    pruning_start_step))`` only once distillation runs; we clamp at 0 so the function is defined
    for every step. ``prune_end <= prune_start`` (pruning in one shot) gives 1 from ``prune_start``.
    """
    if step < prune_start:
        return 0.0
    if prune_end <= prune_start:
        return 1.0
    return min(1.0, (step - prune_start) / (prune_end - prune_start))


def distill_weights(task_type: str) -> tuple[float, float]:
    """(w_pred, w_layer) of L_distill = w_pred * L_pred + w_layer * L_layer for a task type."""
    if task_type not in TASK_TYPES:
        raise LmpruneError(f"unknown distillation task type {task_type!r}; use one of "
                           f"{', '.join(sorted(TASK_TYPES))}.")
    return TASK_TYPES[task_type]


def total_loss(ft_loss: Tensor, pred_loss: Tensor, layer_loss: Tensor | float, mu: float,
               task_type: str) -> Tensor:
    """L = mu * (w_pred * L_pred + w_layer * L_layer) + (1 - mu) * L_ft (paper Eq. 6)."""
    w_pred, w_layer = distill_weights(task_type)
    distill = w_pred * pred_loss + w_layer * layer_loss
    return mu * distill + (1.0 - mu) * ft_loss


# --------------------------------------------------------------------------- prediction loss
def prediction_distillation(student_logits: Tensor, teacher_logits: Tensor,
                            tau: float = 4.0) -> Tensor:
    """L_pred = tau^2 * KL(softmax(z_t / tau) || softmax(z_s / tau)), averaged over rows.

    APT uses ``F.kl_div(..., reduction="batchmean") * tau**2`` (so yes, it multiplies by tau^2).
    Difference: we flatten every leading dimension into rows before averaging, so sequence
    logits ``[batch, seq, vocab]`` give the mean per-token KL; APT's ``batchmean`` divides the
    token sum by the batch size only. For ``[batch, classes]`` the two are identical. The
    teacher's logits are detached. The code default temperature in APT's ``args.py`` is 2/3;
    tau = 4 is the value the brief gives (CoFi's); pass ``tau`` explicitly in recipes.
    """
    if student_logits.shape != teacher_logits.shape:
        raise LmpruneError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                           f"{tuple(teacher_logits.shape)} differ; run both on the same batch.")
    vocab = student_logits.shape[-1]
    log_s = F.log_softmax(_wide(student_logits.reshape(-1, vocab)) / tau, dim=-1)
    p_t = F.softmax(_wide(teacher_logits.detach().reshape(-1, vocab)) / tau, dim=-1)
    return F.kl_div(log_s, p_t, reduction="batchmean") * tau ** 2


def output_logits(out) -> Tensor:
    """The logits to distil from a HF output: ``logits``, or QA's start/end logits stacked."""
    if getattr(out, "logits", None) is not None:
        return out.logits
    return torch.stack([out.start_logits, out.end_logits], -1)


def output_hidden(out) -> Sequence[Tensor]:
    """Layer outputs for layer distillation: the decoder's for seq2seq models, else the model's."""
    for name in ("decoder_hidden_states", "hidden_states"):
        hidden = getattr(out, name, None)
        if hidden is not None:
            return hidden
    raise LmpruneError("the model returned no hidden states; call it with "
                       "output_hidden_states=True for layer distillation")


# --------------------------------------------------------------------------- layer transform
class LayerTransform(nn.Module):
    """Tr(h) = h + s * B A h: a LoRA adapter on a frozen identity (paper Sec. 4.4).

    APT builds ``lora.Linear(d, d, r=8, lora_alpha=16)`` with its weight set to the identity;
    so s = alpha / r = 2. B is zero-initialised, so Tr is exactly the identity at init; A uses
    Kaiming-uniform init as in LoRA. Only A and B are trainable. One transform is shared by all
    layer pairs in APT.
    """

    def __init__(self, hidden_size: int, rank: int = 8, alpha: float = 16.0):
        super().__init__()
        if rank < 1:
            raise LmpruneError(f"LayerTransform rank must be >= 1, got {rank}.")
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, hidden_size))
        self.lora_B = nn.Parameter(torch.zeros(hidden_size, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=5 ** 0.5)

    def forward(self, hidden: Tensor) -> Tensor:
        # hidden is a returned state, alive to the loss: under autocast it is kept, not a copy
        delta = nn.functional.linear(product_of_alive(hidden, self.lora_A), self.lora_B)
        return hidden + self.scaling * delta.to(hidden.dtype)

    def lmprune_slice(self, slicer, rows: Tensor | None = None, cols: Tensor | None = None
                      ) -> None:
        """Follow the pruned hidden channels (``rows`` = ``cols`` = the kept ones): rows of
        ``B``, columns of ``A`` (APT prunes its layer transformation with the hidden size)."""
        if rows is not None:
            slicer.param(self, "lora_B", 0, rows)
        if cols is not None:
            slicer.param(self, "lora_A", 1, cols)


# --------------------------------------------------------------------------- layer mapping
def _layer_outputs(hidden: Sequence[Tensor], n_layers: int) -> Sequence[Tensor]:
    """Drop the embedding output when ``hidden`` is HF's ``n_layers + 1`` list."""
    if len(hidden) == n_layers + 1:
        return hidden[1:]
    if len(hidden) != n_layers:
        raise LmpruneError(f"expected {n_layers} or {n_layers + 1} hidden states, got "
                           f"{len(hidden)}; pass the model's output_hidden_states list.")
    return hidden


def teacher_layers(n_layers: int, strategy: str = "static",
                   rng: random.Random | None = None) -> list[int]:
    """Teacher layers to distil from (0-based layer-output indices), one per block of n // 4.

    ``"static"`` takes the last layer of each block: ``range(n//4 - 1, n, n//4)`` — 12 layers give
    [2, 5, 8, 11] (layers 3, 6, 9, 12 one-based). ``"block"`` draws one layer uniformly inside
    each block (APT's ``dynamic_block_teacher``, the strategy its released scripts use,
    re-drawn at every step). As in APT the block size is ``max(1, n // 4)``, so depths not
    divisible by 4 give more than four blocks (6 layers: all six; 30 layers: 5 blocks).
    """
    if n_layers < 1:
        raise LmpruneError(f"n_layers must be >= 1, got {n_layers}.")
    step = max(1, n_layers // 4)
    if strategy == "static":
        return list(range(step - 1, n_layers, step))
    if strategy == "block":
        rng = rng or random.Random()
        return [rng.choice(range(i, min(i + step, n_layers))) for i in range(0, n_layers, step)]
    raise LmpruneError(f"unknown teacher layer strategy {strategy!r}; use 'static' or 'block'.")


def _channels(h: Tensor, channels: Tensor | None) -> Tensor:
    return h if channels is None else h.index_select(-1, channels.to(h.device))


@torch.no_grad()
def match_layers(student_hidden: Sequence[Tensor], teacher_hidden: Sequence[Tensor],
                 teacher_ids: Sequence[int], surviving: Sequence[bool],
                 transform: nn.Module | None = None,
                 channels: Tensor | None = None,
                 teacher_channels: Tensor | None = None) -> dict[int, int]:
    """phi: teacher layer -> student layer, recomputed every step (APT ``dynamic_student``).

    A teacher layer whose student layer survives maps to that same layer; otherwise to the
    nearest surviving student layer below or above, whichever has the lower
    MSE(Tr(H_s), H_t) (``transform`` = Tr, applied as in APT). Teacher layers with no surviving
    student layer are left out. ``surviving[i]`` says whether student layer i is kept (APT's
    ``layer_z``: its attention and its FFN both keep a unit). ``channels`` /
    ``teacher_channels``: the hidden channels compared (see :func:`layer_distillation`).
    """
    teacher_channels = channels if teacher_channels is None else teacher_channels
    n = len(surviving)
    s_out, t_out = _layer_outputs(student_hidden, n), _layer_outputs(teacher_hidden, n)

    def cost(s: int, t: int) -> float:
        h = s_out[s] if transform is None else transform(s_out[s])
        return F.mse_loss(_wide(_channels(h, channels)),
                          _wide(_channels(t_out[t], teacher_channels))).item()

    mapping: dict[int, int] = {}
    for t in teacher_ids:
        if surviving[t]:
            mapping[t] = t
            continue
        below = next((i for i in range(t - 1, -1, -1) if surviving[i]), None)
        above = next((i for i in range(t + 1, n) if surviving[i]), None)
        candidates = [i for i in (below, above) if i is not None]
        if candidates:
            mapping[t] = min(candidates, key=lambda s: cost(s, t))
    return mapping


def layer_distillation(student_hidden: Sequence[Tensor], teacher_hidden: Sequence[Tensor],
                       mapping: Mapping[int, int],
                       transforms: nn.Module | Mapping[int, nn.Module] | None,
                       n_layers: int | None = None, channels: Tensor | None = None,
                       teacher_channels: Tensor | None = None) -> Tensor:
    """L_layer = sum_{t in mapping} MSE(Tr(H_s^{phi(t)}), H_t^t) (mean-reduced MSE per pair).

    ``transforms``: one module shared by all pairs (APT), a dict teacher layer -> module (or an
    ``nn.ModuleDict`` keyed by ``str(layer)``), or ``None`` for no transform. Teacher states
    are detached. Indices are 0-based layer outputs. ``n_layers`` defaults to
    ``len(student_hidden) - 1`` (HF lists, embedding output first); pass it when the lists
    hold layer outputs only. ``channels`` (optional): the hidden channels compared, the alive
    ones of a model whose pruned hidden channels are masked rather than removed, so the MSE
    averages over what the compacted model holds (None: all); ``teacher_channels`` (default:
    ``channels``): the same channels in the teacher's states, when the teacher keeps more
    channels than the student (a frozen copy taken before the student lost some).
    """
    teacher_channels = channels if teacher_channels is None else teacher_channels
    n = len(student_hidden) - 1 if n_layers is None else n_layers
    s_out, t_out = _layer_outputs(student_hidden, n), _layer_outputs(teacher_hidden, n)
    loss = s_out[-1].new_zeros((), dtype=torch.promote_types(s_out[-1].dtype, torch.float32))
    for t, s in mapping.items():
        if isinstance(transforms, nn.ModuleDict):
            tr = transforms[str(t)] if str(t) in transforms else None
        else:
            tr = transforms.get(t) if isinstance(transforms, Mapping) else transforms
        h = s_out[s] if tr is None else tr(s_out[s])
        loss = loss + _mse(_channels(h, channels),
                           _channels(t_out[t].detach(), teacher_channels))
    return loss


def _mse(x: Tensor, target: Tensor) -> Tensor:
    """``F.mse_loss`` (mean) in float32 at least, keeping one tensor for backward: the
    difference. ``F.mse_loss`` keeps both of its inputs (the transformed student state and a
    widened copy of the teacher's), which the whole forward pass then holds at the step's
    memory peak."""
    return (_wide(x) - _wide(target)).square().mean()


# --------------------------------------------------------------------------- teacher
def snapshot_adapters(model: nn.Module, names: Sequence[str] | None = None) -> dict[str, Tensor]:
    """Frozen copies of adapter tensors, keyed like ``model.state_dict()``.

    ``names`` defaults to every parameter that requires grad (the adapters, with a frozen
    backbone). Take the snapshot before pruning starts; it is the teacher's adapter state.
    """
    state = model.state_dict(keep_vars=True)
    if names is None:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n in names if n not in state]
    if missing:
        raise LmpruneError(f"no tensors named {missing[:3]} in the model; pass names from "
                           f"model.state_dict().")
    return {n: state[n].detach().clone() for n in names}


@contextlib.contextmanager
def teacher_mode(model: nn.Module,
                 frozen_adapter_state: Mapping[str, Tensor]) -> Iterator[nn.Module]:
    """Run ``model`` as the teacher: swap in ``frozen_adapter_state``, restore on exit.

    ``frozen_adapter_state`` maps names from ``model.state_dict()`` to tensors (from
    :func:`snapshot_adapters`, or an adapter module's own ``state_dict`` with its module path
    prefixed). Each named parameter/buffer's ``.data`` is replaced by the frozen tensor (no copy,
    no second model) and put back afterwards, even on error. Gradients are disabled inside, so
    the teacher's outputs never carry grad. Call ``backward`` outside the block: autograd
    reads a parameter's current ``.data``. Shapes may differ
    (the student's adapters can have been pruned or grown); shape-dependent state outside the
    dict (e.g. a LoRA rank attribute or masks) is the caller's business.
    """
    state = model.state_dict(keep_vars=True)
    missing = [n for n in frozen_adapter_state if n not in state]
    if missing:
        raise LmpruneError(f"teacher state names {missing[:3]} are not in the model; keys must "
                           f"be names from model.state_dict().")
    saved = {n: state[n].data for n in frozen_adapter_state}
    try:
        for n, frozen in frozen_adapter_state.items():
            state[n].data = frozen.to(device=saved[n].device, dtype=saved[n].dtype)
        with torch.no_grad():
            yield model
    finally:
        for n, data in saved.items():
            state[n].data = data
