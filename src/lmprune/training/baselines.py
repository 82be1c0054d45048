"""The baselines' pieces that are not plain FT or LoRA: Kwon's post-training mask search and
LoRA training with distillation from the dense model (LoRA+Prune+Distill).

* ``lora-prune``: LoRA fine-tuning, merge, then Kwon et al.'s retraining-free pruning (mask
  Fisher from squared mask gradients, head x neuron search under the parameter budget, mask
  rearrangement, layer-wise least-squares mask tuning), fold the tuned mask values into the
  weights and remove the pruned structures;
* ``mask-tuning``: the same pipeline on a fully fine-tuned model (Kwon et al.'s setting);
* ``lora-prune-distill``: ``lora-prune``, then LoRA training of the pruned model with
  distillation from the dense LoRA-tuned model (prediction KL + layer MSE).

A two-stage pipeline only has a model at its final sparsity at the end, so its time to
accuracy would be measured at one point. :class:`PruneProbe` evaluates it along the run: at a
few dev evaluations of the dense stage the same search and mask tuning prune the current model
(as masks, on the live model: the masked model computes what the pruned one would, and no copy
is made) and the pruned model is evaluated; the point's time is the training so far plus the
search, i.e. when the pipeline could have delivered that model.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch
from torch import nn

from lmprune.arch import describe
from lmprune.structures.counting import head_cost, neuron_cost
from lmprune.structures.masks import apply_masks
from lmprune.structures.removal import remove
from lmprune.training.method import TrainMethod
from lmprune.training.teacher import TeacherDistiller
from lmprune.tuners.apt_adapter import apply_apt, merge_apt


def search_and_tune(model: nn.Module, ctx, keep: float, structure=None):
    """Kwon's search (and mask tuning) on ``model``: real-valued head/neuron masks, unchanged
    model. ``mask_search.*`` settings, widths rounded to ``mask_search.round_to``."""
    from lmprune.pruners._mask_search import mask_search
    from lmprune.pruners._mask_tuning import tune_masks

    cfg = ctx.config.mask_search
    structure = structure or describe(model)
    progress = ctx.config.train.progress
    masks = mask_search(model, ctx.batches(cfg.num_samples), keep_ratio=keep,
                        structure=structure, max_samples=cfg.num_samples,
                        rearrange=cfg.rearrange, progress=progress, round_to=cfg.round_to)
    if cfg.tune:
        masks = tune_masks(model, masks, ctx.batches(cfg.tune_samples), structure=structure,
                           max_samples=cfg.tune_samples, progress=progress)
    return masks


def kwon_prune(model: nn.Module, ctx, keep: float) -> tuple[nn.Module, dict]:
    """Prune a fine-tuned dense model to ``keep`` of its head+neuron parameters (Kwon et al.)."""
    from lmprune.pruners._mask_tuning import fold_masks

    cfg = ctx.config.mask_search
    model.eval()
    structure = describe(model)
    masks = search_and_tune(model, ctx, keep, structure)
    info = {"search_samples": min(cfg.num_samples, len(ctx.train)), "rearrange": cfg.rearrange,
            "tuned": cfg.tune, "round_to": cfg.round_to}
    binary = fold_masks(model, masks, structure)
    info["kept"] = {"heads": int(sum(int((m > 0).sum()) for m in binary.heads.values())),
                    "neurons": int(sum(int((m > 0).sum()) for m in binary.neurons.values()))}
    remove(model, binary, structure)
    return model, info


def probe_steps(total: int, eval_every: int, probes: int) -> set[int]:
    """``probes`` evenly spaced steps among a phase's dev evaluations (every ``eval_every``
    steps), the last one left out: the real pruning happens there."""
    evals = list(range(eval_every, total, eval_every))
    if probes <= 0 or not evals:
        return set()
    if probes >= len(evals):
        return set(evals)
    return {evals[round((i + 1) * len(evals) / probes) - 1] for i in range(probes)}


def _kept_body_ratio(model: nn.Module, structure, masks, dense_body: int) -> float:
    """The body kept after removing what ``masks`` zero (each unit's exact parameter cost)."""
    removed = 0
    for site in structure.attention:
        if site.name in masks.heads:  # grouped-query attention: an emptied group takes its k, v
            cost = head_cost(model, site)
            zero = (masks.heads[site.name] == 0).view(site.num_kv_heads, site.group_size)
            empty = zero.all(1)
            removed += int(empty.sum()) * cost["kv_group"] + int(zero[~empty].sum()) * cost["head"]
    for site in structure.ffn:
        if site.name in masks.neurons:
            removed += int((masks.neurons[site.name] == 0).sum()) * neuron_cost(model, site)
    return (dense_body - removed) / dense_body


class PruneProbe:
    """Called by the training context after each dev evaluation of the dense stage; at the
    chosen steps, prunes the current model with the search (as masks) and adds a curve point
    (phase ``"probe"``) with the pruned model's metric, its kept body and, as its time, the
    training so far plus the search. The clock stays paused: probing is measurement."""

    def __init__(self, ctx, keep: float, steps: set[int]) -> None:
        self.ctx, self.keep, self.steps = ctx, keep, steps
        self.log: list[dict] = []

    def __call__(self, model: nn.Module, method: TrainMethod, step: int, total: int) -> None:
        if step not in self.steps:
            return
        ctx = self.ctx
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        structure = describe(base)
        with method.active(model):
            _sync(ctx.device)
            started = time.perf_counter()
            masks = search_and_tune(base, ctx, self.keep, structure)
            _sync(ctx.device)
            seconds = time.perf_counter() - started
            with apply_masks(base, masks, structure):
                metrics = ctx.task.evaluate(model, ctx.dev, ctx.config.train.eval_batch_size,
                                            ctx.device)
        point = {"step": ctx.steps_done, "seconds": round(ctx.seconds + seconds, 3),
                 "metric": float(metrics[ctx.task.metric]),
                 "keep_ratio": round(_kept_body_ratio(base, structure, masks,
                                                      ctx.dense_body), 4),
                 "phase": "probe", "search_seconds": round(seconds, 3)}
        ctx.curve.append(point)
        self.log.append(point)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class DistilledLoRA(TrainMethod):
    """LoRA (q, v; r=8) on a pruned model, trained on ``w_ft * L_ft + L_distill`` from a
    frozen dense teacher (the LoRA-tuned model before pruning)."""

    name = "lora-distill"

    def __init__(self, distiller: TeacherDistiller, r: int = 8, alpha: float = 16.0,
                 ft_weight: float = 0.0) -> None:
        self.distiller, self.r, self.alpha, self.ft_weight = distiller, r, alpha, ft_weight

    def setup(self, model: nn.Module, ctx=None) -> nn.Module:
        from lmprune.training.method import unfreeze_heads

        apply_apt(model, ["q", "v"], r=self.r, alpha=self.alpha)
        unfreeze_heads(model)
        if ctx is not None:
            self.distiller.to(ctx.device)
        return model

    def parameter_groups(self, model: nn.Module, lr: float) -> list[dict]:
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"params": params + self.distiller.parameters(), "lr": lr}]

    def state_dict(self) -> dict:
        return {"distiller": self.distiller.state_dict()}

    def load_state_dict(self, model: nn.Module, state: dict) -> None:
        self.distiller.load_state_dict(state["distiller"])

    def loss(self, model: nn.Module, batch: dict, step: int) -> torch.Tensor:
        teacher = self.distiller.teacher_outputs(batch)
        out = model(**batch, output_hidden_states=True)
        return self.distiller.loss(out, teacher) + self.ft_weight * out.loss

    @contextlib.contextmanager
    def active(self, model: nn.Module) -> Iterator[nn.Module]:
        yield model

    def finish(self, model: nn.Module) -> nn.Module:
        merge_apt(model)
        self.distiller.teacher = None  # free the dense copy
        return model
