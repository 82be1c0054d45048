"""The baselines' pieces that are not plain FT or LoRA: Kwon's post-training mask search and
LoRA training with distillation from the dense model (LoRA+Prune+Distill).

* ``lora-prune``: LoRA fine-tuning, merge, then Kwon et al.'s retraining-free pruning (mask
  Fisher from squared mask gradients, head x neuron search under the parameter budget, mask
  rearrangement, layer-wise least-squares mask tuning), fold the tuned mask values into the
  weights and remove the pruned structures;
* ``mask-tuning``: the same pipeline on a fully fine-tuned model (Kwon et al.'s setting);
* ``lora-prune-distill``: ``lora-prune``, then LoRA training of the pruned model with
  distillation from the dense LoRA-tuned model (prediction KL + layer MSE).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from lmprune.arch import describe
from lmprune.structures.removal import remove
from lmprune.training.method import TrainMethod
from lmprune.training.teacher import TeacherDistiller
from lmprune.tuners.apt_adapter import apply_apt, merge_apt


def kwon_prune(model: nn.Module, ctx, keep: float) -> tuple[nn.Module, dict]:
    """Prune a fine-tuned dense model to ``keep`` of its head+neuron parameters (Kwon et al.)."""
    from lmprune.pruners._mask_search import mask_search
    from lmprune.pruners._mask_tuning import fold_masks, tune_masks

    cfg = ctx.config.mask_search
    model.eval()
    structure = describe(model)
    progress = ctx.config.train.progress
    masks = mask_search(model, ctx.batches(cfg.num_samples), keep_ratio=keep,
                        structure=structure, max_samples=cfg.num_samples,
                        rearrange=cfg.rearrange, progress=progress)
    info = {"search_samples": min(cfg.num_samples, len(ctx.train)), "rearrange": cfg.rearrange,
            "tuned": cfg.tune}
    if cfg.tune:
        masks = tune_masks(model, masks, ctx.batches(cfg.tune_samples), structure=structure,
                           max_samples=cfg.tune_samples, progress=progress)
    binary = fold_masks(model, masks, structure)
    info["kept"] = {"heads": int(sum(int((m > 0).sum()) for m in binary.heads.values())),
                    "neurons": int(sum(int((m > 0).sum()) for m in binary.neurons.values()))}
    remove(model, binary, structure)
    return model, info


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
