"""APT's self-distillation teacher: a frozen snapshot sharing the student's backbone, or a
separate frozen copy of the whole model (the ablation that removes parameter sharing).

``apt.teacher=best`` / ``start`` (APT, Sec. 4.4): the teacher *is* the student model with a
frozen copy of the tuning parameters and of the masks swapped in for its forward pass
(:func:`lmprune.training.distill.teacher_mode`); the frozen backbone is shared, so the
teacher costs one copy of the tuning parameters. ``best`` re-takes the snapshot whenever the
dev metric beats every earlier value since pruning started (APT's ``self_momentum``).

``apt.teacher=separate``: when pruning starts, a deep copy of the whole model (backbone,
adapters merged into it, task head) is taken once and frozen, with the masks of that moment.
It shares no tensor with the student, so nothing the student's optimizer does reaches it, and
it lives on the student's device, so its memory is part of the run's peak memory. It runs in
the student's train/eval mode, so at the moment of the snapshot it computes exactly what the
shared teacher computes (tested); only the sharing differs.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from lmprune.arch import ModelStructure
from lmprune.structures.masks import Masks, apply_masks
from lmprune.training import distill
from lmprune.tuners.apt_adapter import merge_apt


class APTTeacher:
    """The teacher of one APT run (``mode`` is ``apt.teacher``)."""

    def __init__(self, mode: str, structure: ModelStructure) -> None:
        self.mode, self.structure = mode, structure
        self.state: dict[str, torch.Tensor] | None = None  # shared: frozen tuning tensors
        self.model: nn.Module | None = None  # separate: the frozen copy
        self.masks: Masks | None = None
        self.snapshots = 0

    @property
    def ready(self) -> bool:
        return self.masks is not None

    @property
    def refreshes(self) -> bool:
        """Whether a better dev metric replaces the teacher (``best`` only)."""
        return self.mode == "best"

    def snapshot(self, model: nn.Module, masks: Masks) -> None:
        """Freeze the student as it is now (tuning parameters or the whole model, and masks)."""
        self.masks = clone_masks(masks)
        if self.mode == "separate":
            teacher = copy.deepcopy(model)
            merge_apt(teacher)
            for p in teacher.parameters():
                p.requires_grad_(False)
                p.grad = None
            self.model = teacher
        else:
            self.state = distill.snapshot_adapters(model)
        self.snapshots += 1

    def outputs(self, model: nn.Module, batch: dict):
        """The teacher's outputs (with hidden states, no grad) on ``batch``."""
        if self.model is not None:
            self.model.train(model.training)
            with torch.no_grad(), apply_masks(self.model, self.masks, self.structure):
                return self.model(**batch, output_hidden_states=True)
        with distill.teacher_mode(model, self.state), \
                apply_masks(model, self.masks, self.structure):
            return model(**batch, output_hidden_states=True)

    def parameter_count(self) -> int:
        """Numbers the teacher holds beyond the student: the whole copy or the snapshot."""
        if self.model is not None:
            return sum(p.numel() for p in self.model.parameters())
        return sum(t.numel() for t in (self.state or {}).values())


def clone_masks(masks: Masks) -> Masks:
    """Detached copies of head, neuron and hidden masks (the kinds APT prunes)."""
    return Masks(heads={k: v.detach().clone() for k, v in masks.heads.items()},
                 neurons={k: v.detach().clone() for k, v in masks.neurons.items()},
                 hidden=None if masks.hidden is None else masks.hidden.detach().clone())
