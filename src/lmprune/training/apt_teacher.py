"""APT's self-distillation teacher: a frozen snapshot sharing the student's backbone, or a
separate frozen copy of the whole model (the ablation that removes parameter sharing).

``apt.teacher=best`` / ``start`` (APT, Sec. 4.4): the teacher *is* the student model with a
frozen copy of the tuning parameters and of the masks swapped in for its forward pass
(:func:`lmprune.training.distill.teacher_mode`); the frozen backbone is shared, so the
teacher costs one copy of the tuning parameters. ``best`` re-takes the snapshot whenever the
dev metric beats every earlier value since pruning started (APT's ``self_momentum``).

``apt.teacher=separate``: when pruning starts, a deep copy of the whole model (backbone,
adapters merged into it, task head) is taken once and frozen, with the masks of that moment.
(What the teacher does with the blocks the student prunes later: :class:`APTTeacher`.)
It shares no tensor with the student, so nothing the student's optimizer does reaches it, and
it lives on the student's device, so its memory is part of the run's peak memory. It runs in
the student's train/eval mode, so at the moment of the snapshot it computes exactly what the
shared teacher computes (tested); only the sharing differs.
"""
from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from lmprune.arch import ModelStructure
from lmprune.structures.masks import Masks, apply_masks
from lmprune.structures.moves import ParamMoves
from lmprune.structures.removal import remove
from lmprune.training import distill
from lmprune.tuners.apt_adapter import merge_apt
from lmprune.tuners.frozen_storage import restore_frozen

log = logging.getLogger(__name__)


class APTTeacher:
    """The teacher of one APT run (``mode`` is ``apt.teacher``; ``follows_student`` is
    ``apt.teacher_structure == "student"``).

    Its masks are kept in the dense model's index space (:mod:`lmprune.training.apt_space`).
    What happens to the blocks the student prunes for good after the teacher was taken:

    * ``apt.teacher_structure=snapshot`` (default): the teacher keeps them; it computes what
      the model computed when it was taken (APT's code prunes for real only when
      distillation ends, so its teacher keeps the full structure). With compaction, a shared
      teacher becomes a frozen copy of the model (adapters merged) right before the student
      first loses blocks it uses (:meth:`before_compaction`); a refresh (``best``) takes the
      student as it is then, in its pruned shape, and frees the copy.
    * ``student``: a block the student prunes for good is gone from the teacher too, and its
      frozen tensors are cut with the student's (:meth:`follow`): nothing full-size stays.
    """

    def __init__(self, mode: str, structure: ModelStructure, follows_student: bool = False,
                 dtype: str = "model", model_dtype: torch.dtype | None = None) -> None:
        """``dtype`` (``apt.teacher_dtype``): what a kept copy is stored and run in;
        ``model_dtype``: the dtype the student computes in (its frozen weights may be stored
        in 16 bits, :mod:`lmprune.tuners.frozen_storage`); None: its first parameter's."""
        self.mode, self.structure, self.follows = mode, structure, follows_student
        self.dtype, self.model_dtype = dtype, model_dtype
        self.state: dict[str, torch.Tensor] | None = None  # shared: frozen tuning tensors
        self.model: nn.Module | None = None  # a frozen copy (separate, or a kept snapshot)
        self.masks: Masks | None = None  # dense space
        self.own: tuple[Masks, ModelStructure] | None = None  # a kept copy's masks, structure
        self.copied_at = 0  # removals the copy's structure had when it was made
        self.own_hidden: torch.Tensor | None = None  # alive hidden channels (dense) then
        self.snapshots = 0
        self.largest = 0  # the most numbers the teacher held at once (kept after release)
        self.copy_dtype: str | None = None  # the dtype of the last frozen copy made

    @property
    def ready(self) -> bool:
        return self.masks is not None

    @property
    def refreshes(self) -> bool:
        """Whether a better dev metric replaces the teacher (``best`` only)."""
        return self.mode == "best"

    def snapshot(self, model: nn.Module, masks: Masks, space=None) -> None:
        """Freeze the student as it is now (tuning parameters or the whole model, and masks
        of the dense space; ``space``: the run's :class:`~lmprune.training.apt_space.UnitSpace`)."""
        self.masks, self.model, self.state, self.own = clone_masks(masks), None, None, None
        if self.mode == "separate":
            self._copy(model, None, space)
        else:
            self.state = distill.snapshot_adapters(model)
        self.snapshots += 1
        self.largest = max(self.largest, self.parameter_count())

    def _copy(self, model: nn.Module, state: dict | None, space) -> None:
        teacher = copy.deepcopy(model)
        if state is not None:
            params = dict(teacher.named_parameters())
            with torch.no_grad():
                for name, tensor in state.items():
                    params[name].data = tensor.clone()
        merge_apt(teacher)
        for p in teacher.parameters():
            p.requires_grad_(False)
            p.grad = None
        first = next(model.parameters())
        dtype = kept_dtype(self.dtype, self.mode, self.model_dtype or first.dtype,
                           first.device.type)
        if dtype is not None:  # weights stored in 16 bits go straight to the copy's dtype
            restore_frozen(teacher, dtype)
            teacher.to(dtype)
        self.copy_dtype = str(next(teacher.parameters()).dtype).replace("torch.", "")
        log.info("APT teacher: a frozen copy of the model in %s (apt.teacher_dtype=%s), %d "
                 "parameters", self.copy_dtype, self.dtype,
                 sum(p.numel() for p in teacher.parameters()))
        self.model, self.state = teacher, None
        self.largest = max(self.largest, self.parameter_count())
        self.copied_at = space.removals if space is not None else 0
        if not self.follows and space is not None:
            self.own = (clone_masks(space.to_model(self.masks)), space.current)
            hidden = space.alive.hidden
            self.own_hidden = None if hidden is None else hidden.detach().clone()

    def before_compaction(self, model: nn.Module, space) -> None:
        """The student is about to lose blocks: a shared teacher that keeps its structure
        becomes a frozen copy of the model as it is (with the teacher's tuning tensors)."""
        if not self.follows and self.state is not None:
            self._copy(model, self.state, space)

    def outputs(self, model: nn.Module, batch: dict, space=None):
        """The teacher's outputs (with hidden states, no grad) on ``batch``."""
        if self.own is not None:
            masks, structure = self.own
        elif space is None:
            masks, structure = self.masks, self.structure
        else:
            masks = space.to_model(with_alive(self.masks, space.alive) if self.follows
                                   else self.masks)
            structure = space.current
        if self.model is not None:
            self.model.train(model.training)
            with torch.no_grad(), apply_masks(self.model, masks, structure,
                                              check_values=False):
                return self.model(**batch, output_hidden_states=True)
        with distill.teacher_mode(model, self.state), apply_masks(model, masks, structure,
                                                                  check_values=False):
            return model(**batch, output_hidden_states=True)

    def distilled(self, model: nn.Module, batch: dict, space, strategy: str, rng
                  ) -> tuple[torch.Tensor, list[torch.Tensor | None], list[int]]:
        """The teacher's logits, its hidden states and this step's teacher layers
        (``apt.teacher_layers`` ``strategy``, drawn with ``rng``). Only the hidden states of
        those layers are kept (the others are ``None``): the teacher runs before the student,
        so what it returns is held through the student's forward and backward, the step's
        memory peak (at BERT-base shape, batch 32 x 128, each hidden state is 12.6 MB; 4 of 13
        are used)."""
        out = self.outputs(model, batch, space)
        hidden = distill.output_hidden(out)
        ids = distill.teacher_layers(len(hidden) - 1, strategy, rng)
        used = {i + 1 for i in ids}  # hidden[0] is the embedding output
        return (distill.output_logits(out),
                [h if i in used else None for i, h in enumerate(hidden)], ids)

    def channels(self, space) -> torch.Tensor | None:
        """The teacher's hidden channels that the compacted student still has (a kept copy
        holds the channels alive when it was made); None: the same channels as the student."""
        if self.own is None or self.own_hidden is None or not space.compact:
            return None
        then = torch.nonzero(self.own_hidden != 0).flatten()
        return torch.nonzero(space.alive.hidden[then] != 0).flatten().cpu()

    def follow(self, moves: ParamMoves, names: dict[int, str], model: nn.Module, keep: Masks,
               structure: ModelStructure) -> None:
        """The student ``model`` was compacted (``moves``; ``names``: ``id(parameter) ->
        name`` before; ``keep``: the binary masks removal took, over the model's units
        before, described by ``structure``). A teacher that follows the student is cut the
        same way (its frozen tuning tensors, or its copy with ``keep``)."""
        if not self.follows:
            return
        if self.model is not None:
            remove(self.model, keep, structure)
            self.copied_at += 1
            return
        if self.state is None:
            return
        successors = {names[id(old)]: new for old, new, _ in moves if id(old) in names}
        present = {n for n, _ in model.named_parameters()}
        self.state = {name: moves.slice(successors[name], t) if name in successors else t
                      for name, t in self.state.items() if name in present}

    def release(self) -> None:
        """Distillation is over: drop the copy, the frozen tensors and the masks."""
        self.model = self.state = self.masks = self.own = self.own_hidden = None

    def parameter_count(self) -> int:
        """Numbers the teacher holds beyond the student: the whole copy or the snapshot."""
        if self.model is not None:
            return sum(p.numel() for p in self.model.parameters())
        return sum(t.numel() for t in (self.state or {}).values())


def kept_dtype(setting: str, mode: str, dtype: torch.dtype, device: str
               ) -> torch.dtype | None:
    """The dtype a frozen teacher copy of a ``dtype`` model on ``device`` (its type: "cuda",
    "cpu") is converted to; None keeps the model's. ``auto`` is bfloat16 on a GPU for a
    float32/float64 model, except for ``apt.teacher=separate`` (``mode``), whose copy is what
    the parameter-sharing ablation measures: it keeps the model's dtype."""
    if setting == "model" or not dtype.is_floating_point:
        return None
    if setting == "auto" and (device != "cuda" or mode == "separate"):
        return None
    return torch.bfloat16 if dtype in (torch.float32, torch.float64) else None


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
