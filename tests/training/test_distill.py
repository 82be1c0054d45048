"""APT self-distillation: formulas against hand computations, layer mapping, teacher swapping."""
from __future__ import annotations

import math
import random

import pytest
import torch

from lmprune.errors import LmpruneError
from lmprune.training import (
    LayerTransform, distill_weights, layer_distillation, match_layers, mu,
    prediction_distillation, snapshot_adapters, teacher_layers, teacher_mode, total_loss,
)
from lmprune.zoo import build_tiny


# ----------------------------------------------------------------------------- schedule
@pytest.mark.parametrize("step, expected", [(0, 0.0), (99, 0.0), (100, 0.0), (125, 0.25),
                                            (150, 0.5), (200, 1.0), (500, 1.0)])
def test_mu_schedule(step, expected):
    assert mu(step, 100, 200) == pytest.approx(expected)


def test_mu_one_shot_pruning_is_one_from_start():
    assert mu(9, 10, 10) == 0.0 and mu(10, 10, 10) == 1.0


# ----------------------------------------------------------------------------- prediction KL
def test_prediction_distillation_matches_hand_computation():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 2.0]])
    tau = 4.0
    # softmax([a, b] / tau) for two classes: p1 = 1 / (1 + exp((b - a) / tau))
    ps = [1 / (1 + math.exp(-1 / tau)), 1 / (1 + math.exp(1 / tau))]
    pt = [1 / (1 + math.exp(2 / tau)), 1 / (1 + math.exp(-2 / tau))]
    kl = sum(q * math.log(q / p) for q, p in zip(pt, ps))
    assert prediction_distillation(s, t, tau=tau).item() == pytest.approx(kl * tau ** 2, rel=1e-5)


def test_prediction_distillation_is_row_mean_and_zero_for_equal_logits():
    s, t = torch.randn(3, 5, 7), torch.randn(3, 5, 7)
    s2, t2 = s.reshape(-1, 7), t.reshape(-1, 7)
    rows = torch.stack([prediction_distillation(s2[i:i + 1], t2[i:i + 1]) for i in range(15)])
    assert prediction_distillation(s, t).item() == pytest.approx(rows.mean().item(), rel=1e-5)
    assert prediction_distillation(s, s).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(LmpruneError):
        prediction_distillation(s, t[:, :4])


# ----------------------------------------------------------------------------- layer transform
def test_layer_transform_is_identity_at_init_and_trainable():
    tr = LayerTransform(16, rank=8)
    h = torch.randn(2, 5, 16)
    assert torch.equal(tr(h), h)
    trainable = [p for p in tr.parameters() if p.requires_grad]
    assert {tuple(p.shape) for p in trainable} == {(8, 16), (16, 8)}
    with torch.no_grad():
        tr.lora_B.fill_(0.1)
    assert not torch.allclose(tr(h), h)
    # h + s * B A h with s = alpha / r = 2
    expected = h + 2.0 * (h @ tr.lora_A.T @ tr.lora_B.T)
    torch.testing.assert_close(tr(h), expected)


# ----------------------------------------------------------------------------- teacher layers
def test_teacher_layers_static():
    assert teacher_layers(12) == [2, 5, 8, 11]   # layers 3, 6, 9, 12 one-based
    assert teacher_layers(6) == [0, 1, 2, 3, 4, 5]   # APT's step 6 // 4 = 1
    assert teacher_layers(4) == [0, 1, 2, 3]
    assert teacher_layers(30) == [6, 13, 20, 27]


def test_teacher_layers_block_draws_one_per_block():
    rng = random.Random(0)
    draws = [teacher_layers(12, "block", rng) for _ in range(50)]
    for d in draws:
        assert [x // 3 for x in d] == [0, 1, 2, 3]
    assert len({tuple(d) for d in draws}) > 1
    assert [x // 7 for x in teacher_layers(30, "block", rng)] == [0, 1, 2, 3, 4]
    with pytest.raises(LmpruneError):
        teacher_layers(12, "nope")


# ----------------------------------------------------------------------------- matching
def _states(values, d=4):
    return [torch.full((1, 2, d), float(v)) for v in values]


def test_match_layers_picks_same_or_closest_surviving_layer():
    teacher = _states([0, 1, 2, 3, 4, 5])      # 5 layers + embedding output
    student = _states([0, 1, 2, 9, 3.2, 5])    # layer outputs 1.0, 2.0, 9.0, 3.2, 5.0
    surviving = [True, True, False, True, True]
    # teacher layer 2 (value 3): neighbours 1 (value 2, MSE 1) and 3 (value 3.2, MSE 0.04)
    assert match_layers(student, teacher, [0, 2, 4], surviving) == {0: 0, 2: 3, 4: 4}
    student[4] = torch.full((1, 2, 4), 7.0)     # now layer 3 is far: MSE 16 > 1
    assert match_layers(student, teacher, [2], surviving) == {2: 1}
    assert match_layers(student, teacher, [1], [False] * 5) == {}


def test_match_layers_uses_the_transform():
    teacher = _states([0, 0, 3, 0])              # teacher layer 1 has value 3
    student = _states([0, 2.5, 0, 2.0])          # neighbours: layer 0 (2.5), layer 2 (2.0)
    surviving = [True, False, True]
    assert match_layers(student, teacher, [1], surviving) == {1: 0}   # MSE 0.25 < 1

    class Shift(torch.nn.Module):
        def forward(self, h):
            return h + 1.0

    # Tr(h) = h + 1: layer 0 -> 3.5 (MSE 0.25), layer 2 -> 3.0 (MSE 0)
    assert match_layers(student, teacher, [1], surviving, transform=Shift()) == {1: 2}


def test_layer_distillation_sums_mse_over_pairs():
    teacher, student = _states([0, 1, 2, 3]), _states([0, 1.5, 2, 5])
    got = layer_distillation(student, teacher, {0: 0, 2: 2}, None)
    assert got.item() == pytest.approx(0.25 + 4.0)
    got = layer_distillation(student, teacher, {1: 0}, None)
    assert got.item() == pytest.approx(0.25)
    per_layer = {0: LayerTransform(4), 2: LayerTransform(4)}
    got = layer_distillation(student, teacher, {0: 0, 2: 2}, per_layer)
    assert got.item() == pytest.approx(4.25)
    as_modules = torch.nn.ModuleDict({str(k): v for k, v in per_layer.items()})
    got = layer_distillation(student, teacher, {0: 0, 2: 2}, as_modules)
    assert got.item() == pytest.approx(4.25)


# ----------------------------------------------------------------------------- weights and total
def test_distill_weights_per_task():
    assert distill_weights("classification") == (1.0, 0.9)
    assert distill_weights("qa") == (0.1, 0.9)
    assert distill_weights("summarization") == (0.1, 0.9)
    with pytest.raises(LmpruneError, match="classification"):
        distill_weights("regression")


def test_total_loss_formula():
    ft, pred, layer = torch.tensor(2.0), torch.tensor(3.0), torch.tensor(5.0)
    assert total_loss(ft, pred, layer, 0.25, "classification").item() == pytest.approx(
        0.25 * (3.0 + 0.9 * 5.0) + 0.75 * 2.0)
    assert total_loss(ft, pred, layer, 0.5, "qa").item() == pytest.approx(
        0.5 * (0.3 + 4.5) + 0.5 * 2.0)
    assert total_loss(ft, pred, layer, 0.0, "summarization").item() == pytest.approx(2.0)


# ----------------------------------------------------------------------------- end to end
def test_teacher_mode_and_gradients_on_tiny_bert():
    torch.manual_seed(0)
    model = build_tiny("tiny-bert")
    adapters = ["classifier.weight", "bert.encoder.layer.1.attention.self.query.weight"]
    for name, p in model.named_parameters():
        p.requires_grad_(name in adapters)
    ids = torch.randint(5, 40, (2, 6))
    with torch.no_grad():
        original = model(input_ids=ids).logits
    frozen = snapshot_adapters(model)
    assert sorted(frozen) == sorted(adapters)
    with torch.no_grad():                        # the student's adapters move away
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.5 * torch.randn_like(p))
    student_state = {n: p.detach().clone() for n, p in model.named_parameters()}

    with teacher_mode(model, frozen) as teacher:
        t_out = teacher(input_ids=ids, output_hidden_states=True)
    torch.testing.assert_close(t_out.logits, original)
    assert t_out.logits.grad_fn is None and all(h.grad_fn is None for h in t_out.hidden_states)
    for n, p in model.named_parameters():        # student tensors are back
        assert torch.equal(p, student_state[n])

    model.train()
    s_out = model(input_ids=ids, output_hidden_states=True)
    assert not torch.allclose(s_out.logits, t_out.logits)
    n = model.config.num_hidden_layers
    surviving = [False] + [True] * (n - 1)
    mapping = match_layers(s_out.hidden_states, t_out.hidden_states, teacher_layers(n), surviving)
    assert mapping == {0: 1, 1: 1}
    tr = LayerTransform(model.config.hidden_size)
    layer = layer_distillation(s_out.hidden_states, t_out.hidden_states, mapping, tr)
    pred = prediction_distillation(s_out.logits, t_out.logits)
    ft = torch.nn.functional.cross_entropy(s_out.logits, torch.tensor([0, 1]))
    loss = total_loss(ft, pred, layer, mu(150, 100, 200), "classification")
    loss.backward()
    assert tr.lora_B.grad is not None and tr.lora_B.grad.abs().sum() > 0
    for name in adapters:
        assert model.get_parameter(name).grad.abs().sum() > 0
    assert all(not t.requires_grad and t.grad is None for t in frozen.values())
    assert model.bert.embeddings.word_embeddings.weight.grad is None


def test_teacher_mode_restores_on_error_and_rejects_unknown_names():
    model = build_tiny("tiny-bert")
    before = model.classifier.weight.detach().clone()
    with pytest.raises(RuntimeError):
        with teacher_mode(model, {"classifier.weight": torch.zeros_like(before)}):
            assert model.classifier.weight.abs().sum() == 0
            raise RuntimeError("boom")
    assert torch.equal(model.classifier.weight, before)
    with pytest.raises(LmpruneError, match="state_dict"):
        with teacher_mode(model, {"nope.weight": before}):
            pass
