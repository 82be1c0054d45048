"""CoFi as a training method, with only LoRA and L0 parameters trained.

Xia, Zhong, Chen, "Structured Pruning Learns Compact and Accurate Models" (ACL 2022): hard-
concrete L0 gates on heads, whole attention sublayers, FFN neurons, whole FFN sublayers and
hidden channels (:mod:`lmprune.tuners.l0_gates`), a Lagrangian that pushes the expected
sparsity to a target that warms up linearly, and distillation from a fine-tuned dense teacher
(``0.1 * KL * T^2 + 0.9 * layer loss``). As in APT's "LoRA+Prune+Distill"-style comparison,
the backbone is frozen: only LoRA adapters on q and v (r=8), the task head, the gates and the
Lagrange multipliers train.

Schedule, as CoFi's trainer (``trainer/trainer.py``): the first ``cofi.finetune_steps``
steps fine-tune without gates (``prepruning_finetune_steps = 100``); then the main optimizer
and its linear schedule start afresh over the remaining steps, while log-alpha and the
multipliers train at a constant ``cofi.reg_lr`` (their own AdamW optimizers there, never
scheduled, not in the gradient clipping; here parameter groups that opt out of both), and the
target sparsity warms up from the start of pruning.

Without a teacher (``train.teacher`` unset) the loss is the task loss plus the Lagrangian and
the run says so in its report. ``finish`` takes CoFi's deterministic masks, rounds the kept
FFN neurons of each layer and the kept hidden channels to multiples of ``cofi.round_to``
(APT's rule, as every method of ``lmprune train``), folds the kept head/neuron gate values
into the weights, rounds kept whole-sublayer and hidden gates to 1 (a small deviation: CoFi folds those too) and removes
what the gates closed. Curve points carry the deterministic masks' kept ratio (what the
evaluated model keeps), not the expectation the Lagrangian steers. With ``cofi.fit_target``
(default) the final masks are fitted to the target first (:meth:`L0Gates.fit_shift`): on a
schedule too short for the gates to saturate, CoFi's per-group rounding of ``sum P`` keeps
more than the expectation says (45% for a 40% target, measured on tiny-bert).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from lmprune.arch import describe
from lmprune.pruners.widths import round_kept_rows
from lmprune.structures.masks import Masks, apply_masks
from lmprune.structures.removal import remove
from lmprune.training.apt_parts import equal_heads_per_group
from lmprune.training.method import TrainMethod, unfreeze_heads
from lmprune.training.teacher import TeacherDistiller
from lmprune.tuners.apt_adapter import apply_apt, merge_apt
from lmprune.tuners.l0_gates import DETERMINISTIC_FACTOR


class CoFiMethod(TrainMethod):
    name = "cofi"

    def __init__(self, cfg, sparsity: float, total_steps: int, r: int = 8, alpha: float = 16.0,
                 distiller: TeacherDistiller | None = None) -> None:
        self.cfg, self.sparsity, self.total = cfg, sparsity, total_steps
        self.r, self.alpha, self.distiller = r, alpha, distiller
        self.start = min(cfg.finetune_steps, total_steps // 3)  # first step with gates
        self.warmup = max(1, int(cfg.warmup_fraction * total_steps))
        self.last_expected = 0.0
        self.pruned = False  # True once a step has trained the gates
        self.shift, self.unfitted_keep = {}, None  # fit_target's log-alpha shifts (finish)

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
        regularizer = {"lr": self.cfg.reg_lr, "weight_decay": 0.0, "constant_lr": True,
                       "clip": False}
        return [{"params": params, "lr": lr},
                {"params": list(self.gates.parameters()), **regularizer},
                {"params": list(self.lagrangian.parameters()), **regularizer}]

    def state_dict(self) -> dict:
        return {"gates": self.gates.state_dict(), "lagrangian": self.lagrangian.state_dict(),
                "last_expected": self.last_expected, "pruned": self.pruned,
                "distiller": self.distiller.state_dict() if self.distiller else None}

    def load_state_dict(self, model: nn.Module, state: dict) -> None:
        self.gates.load_state_dict(state["gates"])
        self.lagrangian.load_state_dict(state["lagrangian"])
        self.last_expected, self.pruned = state["last_expected"], state["pruned"]
        if self.distiller is not None:
            self.distiller.load_state_dict(state["distiller"])

    def schedule_restarts(self, total_steps: int) -> tuple[int, ...]:
        return (self.start,) if self.start > 0 else ()

    def loss(self, model: nn.Module, batch: dict, step: int) -> torch.Tensor:
        from lmprune.tuners.l0_gates import target_sparsity

        teacher = self.distiller.teacher_outputs(batch) if self.distiller is not None else None
        if step < self.start:
            out = model(**batch, output_hidden_states=teacher is not None)
            return out.loss if teacher is None else self.distiller.loss(out, teacher)
        masks = self.gates.sample()
        with self.forward_scope(apply_masks(model, masks, self.structure)):
            out = model(**batch, output_hidden_states=teacher is not None)
        main = out.loss if teacher is None else self.distiller.loss(out, teacher)
        expected = self.gates.expected_sparsity()
        self.last_expected = float(expected.detach())
        target = target_sparsity(step - self.start, self.warmup, self.sparsity)
        self.pruned = True
        return main + self.lagrangian(expected, target)

    def after_backward(self, model: nn.Module, step: int) -> None:
        self.lagrangian.flip_multiplier_grads()  # gradient ascent for lambda_1, lambda_2

    def after_step(self, model: nn.Module, step: int) -> bool:
        self.gates.constrain_()  # CoFi clamps log_alpha to [log 1e-2, log 1e2] after each step
        return False

    @contextlib.contextmanager
    def active(self, model: nn.Module) -> Iterator[nn.Module]:
        if not self.pruned:  # still fine-tuning: the dense model
            yield model
            return
        with torch.no_grad():
            masks = self.gates.deterministic_masks()
        with apply_masks(model, masks, self.structure):
            yield model

    def keep_ratio(self) -> float:
        return self.gates.deterministic_keep_ratio() if self.pruned else 1.0

    def finish(self, model: nn.Module) -> nn.Module:
        from lmprune.pruners._mask_tuning import fold_masks

        self.unfitted_keep = self.keep_ratio()
        if self.cfg.fit_target and self.pruned:
            self.shift = self.gates.fit_shift(1.0 - self.sparsity, self._rounded_binary)
        with torch.no_grad():
            masks = self.gates.deterministic_masks(shift=self.shift)
            neurons = self._rounded_neurons(_times(masks.neurons, masks.ffn))
        merge_apt(model)
        heads = _times(masks.heads, masks.attention)
        for site in self.structure.attention:  # grouped-query attention: equal heads per group
            if site.name in heads and site.group_size > 1:
                keep = equal_heads_per_group(heads[site.name], heads[site.name], site.group_size)
                heads[site.name] = heads[site.name] * keep
        units = Masks(heads=heads, neurons=neurons)
        binary = fold_masks(model, units, self.structure)
        binary.attention = {k: (v > 0).float() for k, v in masks.attention.items()}
        binary.ffn = {k: (v > 0).float() for k, v in masks.ffn.items()}
        if masks.hidden is not None:
            binary.hidden = self._rounded_hidden((masks.hidden > 0).float())
        remove(model, binary, self.structure)
        if self.distiller is not None:
            self.distiller.teacher = None
        return model

    def _rounded_binary(self, masks: Masks) -> Masks:
        """Binary ``masks`` with the FFN widths rounded as ``finish`` rounds them."""
        neurons = self._rounded_neurons(_times(masks.neurons, masks.ffn))
        hidden = None if masks.hidden is None else self._rounded_hidden(
            (masks.hidden != 0).float())
        return Masks(heads=masks.heads, attention=masks.attention, ffn=masks.ffn,
                     hidden=hidden,
                     neurons={k: (v != 0).float() for k, v in neurons.items()})

    def _rounded_hidden(self, keep: torch.Tensor) -> torch.Tensor:
        """The kept hidden channels (binary) rounded to a multiple of ``cofi.round_to`` by the
        same rule, higher log-alpha first: an unaligned hidden size (e.g. 766) slows every
        matrix product of the pruned model."""
        if self.cfg.round_to <= 1 or "hidden" not in self.gates.log_alpha:
            return keep
        salience = self.gates.log_alpha["hidden"].detach().to(keep.device)
        return round_kept_rows(keep[None], salience[None], 1.0, self.cfg.round_to)[0]

    def _rounded_neurons(self, neurons: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Kept FFN widths rounded to ``cofi.round_to`` (higher log-alpha first); a neuron the
        rounding adds gets the value its gate would have had (CoFi's deterministic value)."""
        if self.cfg.round_to <= 1 or "neurons" not in self.gates.log_alpha or not neurons:
            return neurons
        sites = [s for s in self.structure.ffn if s.name in neurons]
        per_site = self.gates.site_log_alpha("neurons")
        rows = [per_site[s.name] for s in sites]
        if len({len(r) for r in rows}) != 1:
            return neurons  # unequal widths: nothing to stack (a dense model has none)
        salience = torch.stack(rows)
        kept = torch.stack([neurons[s.name] for s in sites]).to(salience.device)
        costs = torch.tensor([float(self.gates.costs["neurons"][s.name]) for s in sites])
        keep = round_kept_rows((kept != 0).float(), salience, costs, self.cfg.round_to)
        values = torch.where(kept != 0, kept, torch.sigmoid(
            salience * DETERMINISTIC_FACTOR / self.gates.temperature)) * keep
        return {s.name: values[i] for i, s in enumerate(sites)}

    def summary(self) -> dict:
        return {"target_sparsity": self.sparsity, "finetune_steps": self.start,
                "lagrangian_warmup_steps": self.warmup,
                "kept_ratio_cofi_rule": self.unfitted_keep and round(self.unfitted_keep, 4),
                "kept_ratio_fitted": round(self.gates.deterministic_keep_ratio(
                    self.shift, self._rounded_binary), 4),
                "fit_shift": {k: round(v, 4) for k, v in self.shift.items()},
                "expected_sparsity_at_end": round(self.last_expected, 4),
                "teacher": self.distiller is not None,
                "lambdas": [float(p.detach()) for p in self.lagrangian.parameters()]}


def _times(units: dict, scalars: dict) -> dict:
    """Unit masks times their sublayer gate (a closed sublayer zeroes all its units)."""
    return {k: v * (scalars[k] > 0).to(v) if k in scalars else v for k, v in units.items()}
