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
from lmprune.structures.moves import ParamMoves
from lmprune.structures.removal import remove
from lmprune.training import distill
from lmprune.tuners.apt_adapter import merge_apt


class APTTeacher:
    """The teacher of one APT run (``mode`` is ``apt.teacher``).

    Its masks are kept in the dense model's index space (:mod:`lmprune.training.apt_space`)
    and act together with the student's alive units: a block the student has pruned for good
    is gone from the teacher too (APT's teacher uses the student's current structure). When
    the student is compacted, :meth:`follow` cuts the frozen tensors the same way."""

    def __init__(self, mode: str, structure: ModelStructure) -> None:
        self.mode, self.structure = mode, structure
        self.state: dict[str, torch.Tensor] | None = None  # shared: frozen tuning tensors
        self.model: nn.Module | None = None  # separate: the frozen copy
        self.masks: Masks | None = None  # dense space
        self.snapshots = 0

    @property
    def ready(self) -> bool:
        return self.masks is not None

    @property
    def refreshes(self) -> bool:
        """Whether a better dev metric replaces the teacher (``best`` only)."""
        return self.mode == "best"

    def snapshot(self, model: nn.Module, masks: Masks) -> None:
        """Freeze the student as it is now (tuning parameters or the whole model, and masks
        of the dense space)."""
        self.masks = clone_masks(masks)
        if self.mode == "separate":
            self.model = None  # free the old copy before taking the new one
            teacher = copy.deepcopy(model)
            merge_apt(teacher)
            for p in teacher.parameters():
                p.requires_grad_(False)
                p.grad = None
            self.model = teacher
        else:
            self.state = distill.snapshot_adapters(model)
        self.snapshots += 1

    def outputs(self, model: nn.Module, batch: dict, space=None):
        """The teacher's outputs (with hidden states, no grad) on ``batch``; ``space`` (a
        :class:`~lmprune.training.apt_space.UnitSpace`) maps its masks to the model's units."""
        masks = self.masks if space is None else space.to_model(with_alive(self.masks,
                                                                           space.alive))
        structure = self.structure if space is None else space.current
        if self.model is not None:
            self.model.train(model.training)
            with torch.no_grad(), apply_masks(self.model, masks, structure):
                return self.model(**batch, output_hidden_states=True)
        with distill.teacher_mode(model, self.state), apply_masks(model, masks, structure):
            return model(**batch, output_hidden_states=True)

    def follow(self, moves: ParamMoves, names: dict[int, str], model: nn.Module, keep: Masks,
               structure: ModelStructure) -> None:
        """The student ``model`` was compacted (``moves``; ``names``: ``id(parameter) ->
        name`` before; ``keep``: the binary masks removal took, over the model's units
        before, described by ``structure``): cut the frozen tuning tensors the same way, or
        compact the separate copy with ``keep``."""
        if self.model is not None:
            remove(self.model, keep, structure)
            return
        if self.state is None:
            return
        successors = {names[id(old)]: new for old, new, _ in moves if id(old) in names}
        present = {n for n, _ in model.named_parameters()}
        self.state = {name: moves.slice(successors[name], t) if name in successors else t
                      for name, t in self.state.items() if name in present}

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


def with_alive(masks: Masks, alive: Masks) -> Masks:
    """``masks`` with every unit that is not alive set to 0 (same index space)."""
    return Masks(heads={k: v * alive.heads[k] for k, v in masks.heads.items()},
                 neurons={k: v * alive.neurons[k] for k, v in masks.neurons.items()},
                 hidden=None if masks.hidden is None else masks.hidden * alive.hidden)
