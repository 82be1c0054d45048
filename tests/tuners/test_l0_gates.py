"""CoFi's L0 gates (Xia et al., ACL 2022; hard concrete of Louizos et al. 2018): sampling,
expectations, expected size, deterministic masks, Lagrangian ascent, target schedule, and a
tiny BERT trained through the masks and then physically pruned."""
from __future__ import annotations

import math

import pytest
import torch

from lmprune.arch import describe
from lmprune.errors import LmpruneError, UnknownNameError
from lmprune.structures import apply_masks, remove
from lmprune.structures.counting import count_parameters
from lmprune.tuners.l0_gates import (
    GATE_KINDS,
    LOG_ALPHA_RANGE,
    L0Gates,
    Lagrangian,
    hard_concrete_sample,
    lagrangian_loss,
    prob_nonzero,
    target_sparsity,
)
from lmprune.zoo import build_tiny

pytestmark = pytest.mark.usefixtures("one_thread")
T = 2.0 / 3.0
HALF = T * math.log(0.1 / 1.1)  # log_alpha with P(z != 0) = 1/2 under the CoFi defaults


@pytest.fixture(scope="module")
def bert():
    return build_tiny("tiny-bert", "sequence-classification")


@pytest.fixture(scope="module")
def structure(bert):
    return describe(bert)  # 2 layers, 4 heads of 8, FFN width 64, hidden 32


def _f(value) -> float:
    return float(value.detach()) if torch.is_tensor(value) else float(value)


def _set(gates: L0Gates, kind: str, values) -> None:
    with torch.no_grad():
        gates.log_alpha[kind].copy_(torch.as_tensor(values, dtype=torch.float32))


def _fill(gates: L0Gates, value: float) -> None:
    for kind in gates.kinds:
        _set(gates, kind, torch.full_like(gates.log_alpha[kind], value))


def _ids(seed=0):
    return torch.randint(5, 128, (2, 9), generator=torch.Generator().manual_seed(seed))


# --- the hard concrete distribution -------------------------------------------------------

def test_samples_go_to_one_and_zero_at_low_temperature():
    g = torch.Generator().manual_seed(0)
    # |log_alpha| above the largest noise logit, log((1 - eps) / eps) = 13.8
    on = hard_concrete_sample(torch.full((2000,), 15.0), temperature=0.01, generator=g)
    off = hard_concrete_sample(torch.full((2000,), -15.0), temperature=0.01, generator=g)
    assert torch.equal(on, torch.ones(2000)) and torch.equal(off, torch.zeros(2000))


def test_samples_lie_in_unit_interval_with_exact_zeros_and_ones():
    z = hard_concrete_sample(torch.zeros(5000), generator=torch.Generator().manual_seed(1))
    assert z.min() == 0.0 and z.max() == 1.0
    assert 0 < int(((z > 0) & (z < 1)).sum()) < 5000


def test_prob_nonzero_closed_form():
    # P(z != 0) = sigmoid(log_alpha - T log(-gamma/zeta)): 1/2 at HALF, sigmoid(1) one unit above
    p = prob_nonzero(torch.tensor([HALF, HALF + 1.0, 50.0, -50.0]))
    expected = torch.tensor([0.5, 1 / (1 + math.exp(-1)), 1 - 1e-6, 1e-6])
    assert torch.allclose(p, expected, atol=1e-7)


def test_prob_nonzero_matches_monte_carlo():
    log_alpha = torch.tensor([-2.0, -0.5, 0.0, 0.7, 2.5])
    z = hard_concrete_sample(log_alpha.expand(20000, 5), generator=torch.Generator().manual_seed(2))
    estimate = (z > 0).float().mean(0)
    assert torch.allclose(estimate, prob_nonzero(log_alpha), atol=0.015)


def test_gates_sample_matches_expected_masks(structure):
    gates = L0Gates(structure, kinds=("hidden",), init={"hidden": 0.3})
    g = torch.Generator().manual_seed(3)
    draws = torch.stack([gates.sample(generator=g).hidden for _ in range(600)])  # 19,200 draws
    observed = (draws > 0).float().mean()
    assert abs(_f(observed) - _f(gates.expected_masks().hidden.detach().mean())) < 0.015


# --- the module: shapes, init, gradients ----------------------------------------------------

def test_masks_have_the_structure_shapes(structure):
    gates = L0Gates(structure)
    for masks in (gates.sample(), gates.expected_masks(), gates.deterministic_masks()):
        masks.validate(structure)
        assert set(masks.heads) == {"layers.0.attn", "layers.1.attn"}
        assert masks.attention["layers.1.attn"].shape == () and masks.neurons["layers.0.ffn"].shape == (64,)
        assert masks.hidden.shape == (32,) and not masks.kv_groups and not masks.layers


def test_initialisation_follows_cofi(structure):
    torch.manual_seed(0)
    gates = L0Gates(structure, droprate_init=0.2)
    neurons = gates.log_alpha["neurons"]
    assert abs(_f(neurons.detach().mean()) - math.log(0.8 / 0.2)) < 0.01 and _f(neurons.detach().std()) < 0.02
    for kind in ("heads", "attention", "ffn", "hidden"):
        assert torch.allclose(gates.log_alpha[kind], torch.full_like(gates.log_alpha[kind], 10.0), atol=0.06)
    assert [n for n, _ in gates.named_parameters()] == [f"log_alpha.{k}" for k in GATE_KINDS]


def test_gradients_reach_every_log_alpha(structure):
    gates = L0Gates(structure, init={k: 0.0 for k in GATE_KINDS})
    masks = gates.sample(generator=torch.Generator().manual_seed(4))
    loss = sum((t * torch.arange(t.numel()).reshape(t.shape)).sum() + t.sum() for _, _, t in masks.items())
    loss.backward()
    for kind, p in gates.log_alpha.items():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()) and p.grad.abs().sum() > 0, kind


def test_constrain_clamps_log_alpha(structure):
    gates = L0Gates(structure)
    _set(gates, "neurons", torch.linspace(-20, 20, 128))
    gates.constrain_()
    assert _f(gates.log_alpha["neurons"].detach().min()) == pytest.approx(LOG_ALPHA_RANGE[0])
    assert _f(gates.log_alpha["heads"].detach().max()) == pytest.approx(math.log(100.0))


# --- expected size -------------------------------------------------------------------------

def test_full_count_when_every_gate_is_certainly_on(bert, structure):
    gates = L0Gates.from_model(bert)
    assert gates.costs == {"heads": {"layers.0.attn": 1048, "layers.1.attn": 1048},
                           "neurons": {"layers.0.ffn": 65, "layers.1.ffn": 65}}
    assert gates.full_params == 2 * 4 * 1048 + 2 * 64 * 65
    _fill(gates, 50.0)
    assert _f(gates.expected_params()) == pytest.approx(gates.full_params, rel=1e-5)
    assert abs(_f(gates.expected_sparsity())) < 1e-5


def test_expected_params_hand_computed(bert):
    gates = L0Gates.from_model(bert)
    _fill(gates, 50.0)
    _set(gates, "heads", [-50, -50, 50, 50, 50, 50, 50, 50])  # layer 0 loses 2 heads
    _set(gates, "ffn", [50, -50])  # layer 1's FFN goes
    _set(gates, "hidden", [-50.0] * 8 + [50.0] * 24)  # 3/4 of the hidden channels stay
    expected = 0.75 * ((2 + 4) * 1048 + 64 * 65)
    assert _f(gates.expected_params()) == pytest.approx(expected, rel=1e-4)
    assert _f(gates.expected_sparsity()) == pytest.approx(1 - expected / 16704, rel=1e-4)


def test_expected_params_with_half_probabilities_and_missing_kinds(structure):
    gates = L0Gates(structure, kinds=("attention", "neurons"))  # weight-only estimated costs
    assert gates.costs["heads"]["layers.0.attn"] == 4 * 8 * 32
    assert gates.costs["neurons"]["layers.0.ffn"] == 64
    _set(gates, "attention", [HALF, 50.0])
    _set(gates, "neurons", [HALF] * 64 + [50.0] * 64)
    expected = 0.5 * 4 * 1024 + 4 * 1024 + 32 * 64 + 64 * 64  # heads, ffn and hidden ungated
    assert _f(gates.expected_params()) == pytest.approx(expected, rel=1e-4)


def test_expected_sparsity_is_differentiable(structure):
    gates = L0Gates(structure, init={k: 0.0 for k in GATE_KINDS})
    gates.expected_sparsity().backward()
    assert all(bool((p.grad < 0).all()) for p in gates.log_alpha.values())  # more alpha, less sparsity


# --- deterministic masks -------------------------------------------------------------------

def test_deterministic_masks_keep_round_expected_nonzeros(structure):
    gates = L0Gates(structure, init={k: 0.0 for k in GATE_KINDS})
    g = torch.Generator().manual_seed(5)
    for kind in GATE_KINDS:
        _set(gates, kind, torch.randn(gates.log_alpha[kind].shape, generator=g) * 3)
    masks, probs = gates.deterministic_masks(), gates.expected_masks()
    offsets = dict.fromkeys(GATE_KINDS, 0)  # log_alpha[kind] concatenates the sites in order
    for (kind, site, mask), (_, _, p) in zip(masks.items(), probs.items()):
        mask, n = mask.reshape(-1), mask.numel()
        log_alpha = gates.log_alpha[kind].detach()[offsets[kind]:offsets[kind] + n]
        offsets[kind] += n
        keep = mask != 0
        assert int(keep.sum()) == n - round(n - _f(p.sum())), (kind, site)
        if 0 < int(keep.sum()) < n:
            assert log_alpha[keep].min() > log_alpha[~keep].max()
        assert torch.allclose(mask[keep], torch.sigmoid(0.8 * log_alpha[keep] / T))
    assert offsets == {k: v.numel() for k, v in gates.log_alpha.items()}


def test_deterministic_scalar_gates_hand_computed(structure):
    gates = L0Gates(structure, kinds=("attention", "ffn"))
    _set(gates, "attention", [-3.0, 0.0])  # P = sigmoid(-3 - HALF) = 0.197: dropped; 0.832: kept
    _set(gates, "ffn", [HALF + 0.01, HALF - 0.01])  # P just above / below 1/2
    masks = gates.deterministic_masks()
    assert _f(masks.attention["layers.0.attn"]) == 0.0
    assert _f(masks.attention["layers.1.attn"]) == pytest.approx(0.5)
    assert _f(masks.ffn["layers.0.ffn"]) == pytest.approx(1 / (1 + math.exp(-0.8 * (HALF + 0.01) / T)))
    assert _f(masks.ffn["layers.1.ffn"]) == 0.0
    binary = gates.deterministic_masks(binary=True)
    assert binary.is_binary() and _f(binary.attention["layers.1.attn"]) == 1.0


def test_deterministic_hidden_is_one_group(structure):
    gates = L0Gates(structure, kinds=("hidden",))
    _set(gates, "hidden", [50.0] * 20 + [-50.0] * 12)
    kept = gates.deterministic_masks().hidden != 0
    assert torch.equal(kept, torch.tensor([True] * 20 + [False] * 12))


# --- the Lagrangian and the target schedule ------------------------------------------------

def test_lagrangian_value():
    lag = Lagrangian()
    assert _f(lag(torch.tensor(0.3), 0.5)) == 0.0  # multipliers start at 0
    with torch.no_grad():
        lag.lambda_1.fill_(0.5)
        lag.lambda_2.fill_(2.0)
    assert _f(lag(torch.tensor(0.3), 0.5)) == pytest.approx(0.5 * -0.2 + 2.0 * 0.04)


@pytest.mark.parametrize("s, t", [(0.3, 0.5), (0.7, 0.4)])
def test_flipped_grads_make_one_step_ascend(s, t):
    lag = Lagrangian()
    opt = torch.optim.SGD(lag.parameters(), lr=1.0)
    before = _f(lag(torch.tensor(s), t))
    lag(torch.tensor(s), t).backward()
    lag.flip_multiplier_grads()
    opt.step()
    assert _f(lag.lambda_1) == pytest.approx(s - t) and _f(lag.lambda_2) == pytest.approx((s - t) ** 2)
    assert _f(lag(torch.tensor(s), t)) > before


def test_flip_matches_adam_maximize():
    flipped, maximized = Lagrangian(), Lagrangian()
    opt_a = torch.optim.AdamW(flipped.parameters(), lr=0.1, weight_decay=0.0)
    opt_b = torch.optim.AdamW(maximized.ascent_parameters(), lr=0.1, weight_decay=0.0, maximize=True)
    for s in (0.2, 0.25, 0.6):
        for lag, opt in ((flipped, opt_a), (maximized, opt_b)):
            opt.zero_grad()
            lag(torch.tensor(s), 0.5).backward()
            if lag is flipped:
                lag.flip_multiplier_grads()
            opt.step()
    for a, b in zip(flipped.parameters(), maximized.parameters()):
        assert torch.allclose(a, b) and _f(a) != 0.0


def test_gate_step_moves_sparsity_toward_the_target(structure):
    gates, lag = L0Gates(structure, init={k: 0.0 for k in GATE_KINDS}), Lagrangian()
    with torch.no_grad():
        lag.lambda_1.fill_(-1.0)  # what ascent gives while the model is not sparse enough
    loss, before, target = lagrangian_loss(gates, lag, step=10, warmup_steps=10, final=0.9)
    assert target == 0.9 and _f(before) < target
    loss.backward()
    torch.optim.SGD(gates.parameters(), lr=1.0).step()
    assert _f(gates.expected_sparsity()) > _f(before)


def test_target_sparsity_warm_up():
    assert target_sparsity(0, 100, 0.6) == 0.0
    assert target_sparsity(50, 100, 0.6) == pytest.approx(0.3)
    assert target_sparsity(100, 100, 0.6) == pytest.approx(0.6)
    assert target_sparsity(250, 100, 0.6) == pytest.approx(0.6)
    assert target_sparsity(7, 0, 0.6) == 0.6
    assert target_sparsity(50, 100, 0.5, start=0.1) == pytest.approx(0.3)


# --- bad input -----------------------------------------------------------------------------

def test_bad_settings_are_explained(structure):
    with pytest.raises(UnknownNameError, match="Did you mean 'heads'"):
        L0Gates(structure, kinds=("head",))
    with pytest.raises(LmpruneError, match="droprate_init=1.0.*\n.*temperature=0"):
        L0Gates(structure, droprate_init=1.0, temperature=0)
    with pytest.raises(LmpruneError, match=r"costs\['neurons'\] lacks sites \['layers.0.ffn', 'layers.1"):
        L0Gates(structure, costs={"heads": {"layers.0.attn": 1, "layers.1.attn": 1}})
    with pytest.raises(LmpruneError, match="not gated here"):
        L0Gates(structure, kinds=("heads",), init={"hidden": 1.0})
    with pytest.raises(LmpruneError, match=r"final=1.0 must be in \[0, 1\)"):
        target_sparsity(3, 10, 1.0)


# --- end to end on a tiny BERT -------------------------------------------------------------

def test_train_step_through_sampled_masks(bert):
    gates, lag = L0Gates.from_model(bert, init={k: 0.0 for k in GATE_KINDS}), Lagrangian()
    masks = gates.sample(generator=torch.Generator().manual_seed(6))
    with apply_masks(bert, masks):
        logits = bert(input_ids=_ids()).logits
    penalty, sparsity, target = lagrangian_loss(gates, lag, 5, 10, 0.5)
    (logits.pow(2).mean() + penalty).backward()
    lag.flip_multiplier_grads()
    for kind, grad in ((k, p.grad) for k, p in gates.log_alpha.items()):
        z = torch.cat([t.detach().reshape(-1) for k, _, t in masks.items() if k == kind])
        interior = (z > 0) & (z < 1)
        assert bool(torch.isfinite(grad).all()) and bool((grad[~interior] == 0).all()), kind
        assert grad[interior].abs().sum() > 0 or not bool(interior.any()), kind
    assert sum(int(p.grad.count_nonzero()) for p in gates.log_alpha.values()) > 100
    assert target == 0.25
    assert _f(lag.lambda_1.grad) == pytest.approx(-(_f(sparsity) - target))  # flipped
    bert.zero_grad()


def test_removal_with_deterministic_masks(bert):
    model = build_tiny("tiny-bert", "sequence-classification", seed=1)
    gates = L0Gates.from_model(model)
    _fill(gates, 5.0)
    _set(gates, "heads", [-5, 5, 5, -5, 5, 5, 5, 5])
    _set(gates, "neurons", [5.0, -5.0] * 32 + [5.0] * 48 + [-5.0] * 16)
    _set(gates, "hidden", [5.0] * 28 + [-5.0] * 4)
    binary = gates.deterministic_masks(binary=True)
    with torch.no_grad(), apply_masks(model, binary):
        masked = model(input_ids=_ids(1)).logits
    remove(model, binary)
    with torch.no_grad():
        pruned = model(input_ids=_ids(1)).logits
    assert torch.allclose(masked, pruned, atol=1e-5)
    assert model.config.hidden_size == 28


def test_expected_params_match_removed_parameters():
    model = build_tiny("tiny-bert", "sequence-classification", seed=2)
    gates = L0Gates.from_model(model, kinds=("heads", "neurons"))
    _fill(gates, 50.0)
    _set(gates, "heads", [50, -50, 50, 50, -50, -50, 50, 50])
    _set(gates, "neurons", [-50.0] * 10 + [50.0] * 118)
    before = count_parameters(model).body
    remove(model, gates.deterministic_masks(binary=True))
    assert before - count_parameters(model).body == pytest.approx(
        gates.full_params - _f(gates.expected_params()), abs=0.1)


# --- deterministic size and fitting it to a target ------------------------------------------
def test_deterministic_keep_ratio_counts_the_eval_masks(structure):
    """Hand count: layer 0 keeps 3 heads and 16 neurons, layer 1's FFN sublayer is closed,
    half the hidden channels stay; costs from the structure's estimate (weights only)."""
    gates = L0Gates(structure)
    _set(gates, "heads", [9.0, 9.0, 9.0, -9.0] + [9.0] * 4)
    _set(gates, "neurons", [9.0] * 16 + [-9.0] * 48 + [9.0] * 64)
    _set(gates, "attention", [9.0, 9.0])
    _set(gates, "ffn", [9.0, -9.0])
    _set(gates, "hidden", [9.0] * 16 + [-9.0] * 16)
    head, neuron = 4 * 8 * 32, 2 * 32  # q, k, v rows and o columns; a row in, a column out
    kept = 0.5 * (3 * head + 4 * head + 16 * neuron)
    assert gates.deterministic_keep_ratio() == pytest.approx(kept / gates.full_params)


def test_fit_shift_keeps_at_most_the_target_and_is_maximal(structure):
    gates = L0Gates(structure)
    g = torch.Generator().manual_seed(3)
    for kind in ("heads", "neurons"):
        _set(gates, kind, torch.randn(gates.log_alpha[kind].shape, generator=g))
    neuron = 2 * 32 / gates.full_params  # one neuron's share
    for target in (0.2, 0.4, 0.7):
        shift = gates.fit_shift(target)
        assert target - 2 * neuron < gates.deterministic_keep_ratio(shift) <= target
        assert gates.deterministic_keep_ratio({**shift, "neurons": shift["neurons"] + 1e-3}) \
            > target
    kept = gates.deterministic_masks(shift=gates.fit_shift(0.4)).neurons["layers.0.ffn"] != 0
    order = gates.site_log_alpha("neurons")["layers.0.ffn"]
    assert order[kept].min() > order[~kept].max()  # still CoFi's order within the layer
