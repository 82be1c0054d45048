"""Distillation from a separate frozen teacher model (CoFi, LoRA+Prune+Distill).

APT distils from itself (a snapshot of its adapters, :mod:`lmprune.training.apt`); the
baselines it is compared with distil from a fine-tuned dense model held beside the student,
which costs a second model in memory (part of what the memory column measures).

Loss: ``w_pred * KL(teacher || student) * T^2 + w_layer * L_layer`` where ``L_layer`` sums the
MSE between a learnable transform of student layer outputs and the teacher's, one teacher
layer per quarter of the depth, matched to the nearest surviving student layer
(:func:`lmprune.training.distill.match_layers`). CoFi uses a full d x d linear as the
transform; we use APT's LoRA-on-identity transform (same role, far fewer parameters).
"""
from __future__ import annotations

import copy
import random

import torch
from torch import nn

from lmprune.training import distill


class TeacherDistiller:
    """Holds a frozen teacher and computes the distillation loss of a student's outputs."""

    def __init__(self, teacher: nn.Module, hidden_size: int, temperature: float,
                 pred_weight: float, layer_weight: float, seed: int = 0,
                 strategy: str = "static") -> None:
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.temperature, self.strategy = temperature, strategy
        self.pred_weight, self.layer_weight = pred_weight, layer_weight
        self.transform = distill.LayerTransform(hidden_size)
        self.rng = random.Random(seed)

    def to(self, device) -> TeacherDistiller:
        self.teacher.to(device)
        self.transform.to(device)
        return self

    @classmethod
    def frozen_copy(cls, model: nn.Module, **kw) -> TeacherDistiller:
        return cls(copy.deepcopy(model), **kw)

    def state_dict(self) -> dict:
        """The layer transform and the layer sampler's state (the teacher is rebuilt)."""
        return {"transform": self.transform.state_dict(), "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        self.transform.load_state_dict(state["transform"])
        self.rng.setstate(state["rng"])

    def parameters(self) -> list[nn.Parameter]:
        return list(self.transform.parameters())

    @torch.no_grad()
    def teacher_outputs(self, batch: dict):
        return self.teacher(**batch, output_hidden_states=True)

    def loss(self, student_out, teacher_out) -> torch.Tensor:
        pred = distill.prediction_distillation(distill.output_logits(student_out),
                                               distill.output_logits(teacher_out),
                                               self.temperature)
        s_hidden = distill.output_hidden(student_out)
        t_hidden = distill.output_hidden(teacher_out)
        n_s, n_t = len(s_hidden) - 1, len(t_hidden) - 1
        if n_s != n_t:  # the student lost whole layers: compare the layers that exist
            return self.pred_weight * pred
        ids = distill.teacher_layers(n_t, self.strategy, self.rng)
        mapping = distill.match_layers(s_hidden, t_hidden, ids, [True] * n_s, self.transform)
        layer = distill.layer_distillation(s_hidden, t_hidden, mapping, self.transform)
        return self.pred_weight * pred + self.layer_weight * layer
