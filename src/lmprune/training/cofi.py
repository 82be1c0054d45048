"""CoFi as a training method, with only LoRA and L0 parameters trained.

Xia, Zhong, Chen, "Structured Pruning Learns Compact and Accurate Models" (ACL 2022): hard-
concrete L0 gates on heads, whole attention sublayers, FFN neurons, whole FFN sublayers and
hidden channels (:mod:`lmprune.tuners.l0_gates`), a Lagrangian that pushes the expected
sparsity to a target that warms up linearly, and distillation from a fine-tuned dense teacher
(``0.1 * KL * T^2 + 0.9 * layer loss``). As in APT's "LoRA+Prune+Distill"-style comparison,
the backbone is frozen: only LoRA adapters on q and v (r=8), the task head, the gates and the
Lagrange multipliers train.

Without a teacher (``train.teacher`` unset) the loss is the task loss plus the Lagrangian and
the run says so in its report. ``finish`` takes CoFi's deterministic masks, folds the kept
head/neuron gate values into the weights, rounds kept whole-sublayer and hidden gates to 1
(a small deviation: CoFi folds those too) and removes what the gates closed.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from lmprune.arch import describe
from lmprune.structures.masks import Masks, apply_masks
from lmprune.structures.removal import remove
from lmprune.training.apt_parts import equal_heads_per_group
from lmprune.training.method import TrainMethod, unfreeze_heads
from lmprune.training.teacher import TeacherDistiller
from lmprune.tuners.apt_adapter import apply_apt, merge_apt


class CoFiMethod(TrainMethod):
    name = "cofi"

    def __init__(self, cfg, sparsity: float, total_steps: int, r: int = 8, alpha: float = 16.0,
                 distiller: TeacherDistiller | None = None) -> None:
        self.cfg, self.sparsity, self.total = cfg, sparsity, total_steps
        self.r, self.alpha, self.distiller = r, alpha, distiller
        self.warmup = max(1, int(cfg.warmup_fraction * total_steps))
        self.last_expected = 0.0

    def setup(self, model: nn.Module, ctx=None) -> nn.Module:
        from lmprune.tuners.l0_gates import L0Gates, Lagrangian

        self.structure = describe(model)
        self.gates = L0Gates.from_model(model, kinds=tuple(self.cfg.kinds),
                                        droprate_init=self.cfg.droprate_init,
                                        temperature=self.cfg.temperature)
        apply_apt(model, ["q", "v"], r=self.r, alpha=self.alpha)
        unfreeze_heads(model)
        self.lagrangian = Lagrangian()
        device = next(model.parameters()).device if ctx is None else ctx.device
        self.gates.to(device)
        self.lagrangian.to(device)
        if self.distiller is not None:
            self.distiller.to(device)
        return model

    def parameter_groups(self, model: nn.Module, lr: float) -> list[dict]:
        params = [p for p in model.parameters() if p.requires_grad]
        if self.distiller is not None:
            params += self.distiller.parameters()
        return [{"params": params, "lr": lr},
                {"params": list(self.gates.parameters()), "lr": self.cfg.reg_lr},
                {"params": list(self.lagrangian.parameters()), "lr": self.cfg.reg_lr,
                 "weight_decay": 0.0}]

    def loss(self, model: nn.Module, batch: dict, step: int) -> torch.Tensor:
        from lmprune.tuners.l0_gates import target_sparsity

        teacher = self.distiller.teacher_outputs(batch) if self.distiller is not None else None
        masks = self.gates.sample()
        with apply_masks(model, masks, self.structure):
            out = model(**batch, output_hidden_states=teacher is not None)
        main = out.loss if teacher is None else self.distiller.loss(out, teacher)
        expected = self.gates.expected_sparsity()
        self.last_expected = float(expected.detach())
        target = target_sparsity(step, self.warmup, self.sparsity)
        return main + self.lagrangian(expected, target)

    def after_backward(self, model: nn.Module, step: int) -> None:
        self.lagrangian.flip_multiplier_grads()  # gradient ascent for lambda_1, lambda_2

    def after_step(self, model: nn.Module, step: int) -> bool:
        self.gates.constrain_()  # CoFi clamps log_alpha to [log 1e-2, log 1e2] after each step
        return False

    @contextlib.contextmanager
    def active(self, model: nn.Module) -> Iterator[nn.Module]:
        with torch.no_grad():
            masks = self.gates.deterministic_masks()
        with apply_masks(model, masks, self.structure):
            yield model

    def keep_ratio(self) -> float:
        return max(0.0, 1.0 - self.last_expected)

    def finish(self, model: nn.Module) -> nn.Module:
        from lmprune.pruners._mask_tuning import fold_masks

        with torch.no_grad():
            masks = self.gates.deterministic_masks()
        merge_apt(model)
        heads = _times(masks.heads, masks.attention)
        for site in self.structure.attention:  # grouped-query attention: equal heads per group
            if site.name in heads and site.group_size > 1:
                keep = equal_heads_per_group(heads[site.name], heads[site.name], site.group_size)
                heads[site.name] = heads[site.name] * keep
        units = Masks(heads=heads, neurons=_times(masks.neurons, masks.ffn))
        binary = fold_masks(model, units, self.structure)
        binary.attention = {k: (v > 0).float() for k, v in masks.attention.items()}
        binary.ffn = {k: (v > 0).float() for k, v in masks.ffn.items()}
        if masks.hidden is not None:
            binary.hidden = (masks.hidden > 0).float()
        remove(model, binary, self.structure)
        if self.distiller is not None:
            self.distiller.teacher = None
        return model

    def summary(self) -> dict:
        return {"target_sparsity": self.sparsity, "lagrangian_warmup_steps": self.warmup,
                "expected_sparsity_at_end": round(self.last_expected, 4),
                "teacher": self.distiller is not None,
                "lambdas": [float(p.detach()) for p in self.lagrangian.parameters()]}


def _times(units: dict, scalars: dict) -> dict:
    """Unit masks times their sublayer gate (a closed sublayer zeroes all its units)."""
    return {k: v * (scalars[k] > 0).to(v) if k in scalars else v for k, v in units.items()}
