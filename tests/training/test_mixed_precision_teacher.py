"""bf16 training with a teacher that shares the student's parameters: the student's forward
after the teacher's uses the student's own weights and sends them gradients (autocast's cache
of cast weights, keyed by the parameter object, would hand it the teacher's)."""
from __future__ import annotations

import contextlib
from types import SimpleNamespace

import torch
from torch import nn

from lmprune.training import distill
from lmprune.training.loop import _autocast

NO_ACCELERATE = SimpleNamespace(autocast=contextlib.nullcontext)


def test_student_forward_after_a_shared_teacher_uses_its_own_weights():
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    x = torch.randn(2, 4)
    teacher_state = {"weight": torch.zeros(3, 4)}  # the teacher's weights differ
    with _autocast(NO_ACCELERATE, torch.device("cpu"), "bf16"):
        with distill.teacher_mode(layer, teacher_state):
            teacher = layer(x)
        student = layer(x)
    expected = nn.functional.linear(x.bfloat16(), layer.weight.bfloat16(), layer.bias.bfloat16())
    assert teacher.dtype == torch.bfloat16 and student.dtype == torch.bfloat16
    assert torch.equal(student, expected)
    student.float().sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_a_grown_teacher_shape_does_not_reach_the_student():
    layer = nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with _autocast(NO_ACCELERATE, torch.device("cpu"), "bf16"):
        with distill.teacher_mode(layer, {"weight": torch.zeros(5, 4), "bias": torch.zeros(5)}):
            assert layer(x).shape == (2, 5)
        student = layer(x)
    assert student.shape == (2, 3)
    student.float().sum().backward()  # the rank-growth crash on mpnet-base happened here
    assert layer.weight.grad.shape == (3, 4)
