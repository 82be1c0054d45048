"""APT's outlier-aware salience: formulas against hand-computed values, collector vs autograd."""
from __future__ import annotations

import math

import pytest
import torch

from lmprune.arch import describe
from lmprune.errors import LmpruneError
from lmprune.pruners.selection import select
import lmprune.scorers.apt_salience as apt_salience_module
from lmprune.scorers.apt_salience import (SalienceCollector, SalienceEMA, activation_salience,
                                          apt_salience, column_power_sums,
                                          fisher_salience, hidden_outlier_term, kurtosis,
                                          magnitude_salience, outlier_from_mean,
                                          outlier_from_power_sums, outlier_term)
from lmprune.zoo import build_tiny

H = torch.tensor([[[1.0, -2.0], [3.0, 0.0]]])  # [batch 1, tokens 2, channels 2]
G = torch.tensor([[[0.5, 1.0], [-1.0, 2.0]]])
# sum|H| = [4, 2], sum|G| = [1.5, 3] -> per channel [6, 6]


def spike_column(d_out: int = 10) -> torch.Tensor:
    """[1, 0, ..., 0]: Bernoulli(p = 1/d_out) entries, Pearson kurtosis (1-3p+3p^2)/(p(1-p))."""
    col = torch.zeros(d_out)
    col[0] = 1.0
    return col


def test_activation_salience_by_hand():
    assert torch.allclose(activation_salience(H, G), torch.tensor([6.0, 6.0]))
    assert torch.allclose(activation_salience(H, G, group_size=2), torch.tensor([12.0]))
    with pytest.raises(LmpruneError):
        activation_salience(H, G[..., :1])


def test_kurtosis_known_vectors():
    # [1,2,3,4]: m2 = 1.25, m4 = 2.5625 -> 2.5625 / 1.5625 = 1.64
    assert kurtosis(torch.tensor([1.0, 2.0, 3.0, 4.0])).item() == pytest.approx(1.64)
    # symmetric two-point distribution: kurtosis 1 (the minimum), excess -2
    assert kurtosis(torch.tensor([-1.0, 1.0, -1.0, 1.0])).item() == pytest.approx(1.0)
    assert kurtosis(torch.tensor([-1.0, 1.0]), excess=True).item() == pytest.approx(-2.0)
    # one spike in ten: p = 0.1 -> 0.73 / 0.09 = 8.111...
    assert kurtosis(spike_column()).item() == pytest.approx(0.73 / 0.09, rel=1e-5)
    # constant vector: zero variance -> 0
    assert kurtosis(torch.ones(5)).item() == 0.0
    # along a dim
    rows = torch.stack([torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([-1.0, 1.0, -1.0, 1.0])])
    assert torch.allclose(kurtosis(rows, dim=1), torch.tensor([1.64, 1.0]))


def test_kurtosis_gaussian_is_three():
    x = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    assert kurtosis(x).item() == pytest.approx(3.0, abs=0.06)
    assert kurtosis(x, excess=True).item() == pytest.approx(0.0, abs=0.06)


def test_outlier_term_by_hand():
    alternating = torch.tensor([1.0, -1.0] * 5)  # kurtosis 1 -> excess -2 -> clamped 0
    weight = torch.stack([spike_column(), alternating], dim=1)  # [10, 2]
    act = torch.tensor([[2.0, 3.0], [4.0, -1.0]])  # mean [3, 1]: scaling keeps kurtosis
    spike = math.sqrt(0.73 / 0.09 - 3.0)  # sqrt(46/9) = 2.2608
    assert torch.allclose(outlier_term(weight, act), torch.tensor([spike, 0.0]), atol=1e-5)
    # zero mean activation -> O = 0 -> no outlier term
    assert torch.allclose(outlier_term(weight, torch.tensor([[1.0, 1.0], [-1.0, -1.0]])),
                          torch.zeros(2))
    # one head of 2 channels: entries 3*[spike] and 0*[...] -> one spike in 20 (p = 0.05)
    head_weight = torch.stack([spike_column(), torch.zeros(10)], dim=1)
    p = 0.05
    expected = math.sqrt((1 - 3 * p + 3 * p * p) / (p * (1 - p)) - 3.0)
    assert outlier_term(head_weight, act, group_size=2).item() == pytest.approx(expected, rel=1e-5)


def test_outlier_from_power_sums_by_hand_and_against_the_centred_formula():
    # the hand-computed cases above, through power sums
    alternating = torch.tensor([1.0, -1.0] * 5)
    weight = torch.stack([spike_column(), alternating], dim=1)
    spike = math.sqrt(0.73 / 0.09 - 3.0)
    got = outlier_from_power_sums(column_power_sums(weight), torch.full((2,), 10.0),
                                  torch.tensor([3.0, 1.0]))
    assert torch.allclose(got, torch.tensor([spike, 0.0]), atol=1e-6)
    assert torch.equal(outlier_from_power_sums(column_power_sums(weight), torch.full((2,), 10.0),
                                               torch.zeros(2)), torch.zeros(2))  # O = 0
    # two projections side by side (10 and 6 rows), heads of 2 channels, float64 throughout
    g = torch.Generator().manual_seed(0)
    w1, w2 = torch.randn(10, 4, generator=g).double(), torch.randn(6, 6, generator=g).double()
    w2[0, 1] = 9.0  # an outlier
    m1, m2 = torch.randn(4, generator=g).double(), torch.randn(6, generator=g).double()
    sums = torch.cat([column_power_sums(w1), column_power_sums(w2)], 1)
    rows = torch.tensor([10.0] * 4 + [6.0] * 6)
    got = outlier_from_power_sums(sums, rows, torch.cat([m1, m2]), group_size=2)
    expected = torch.cat([outlier_from_mean(w1, m1, 2), outlier_from_mean(w2, m2, 2)]).float()
    assert got.shape == (5,)
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert got[3] > 1.0  # the outlier's head
    with pytest.raises(LmpruneError, match="groups of 3"):
        outlier_from_power_sums(sums, rows, torch.cat([m1, m2]), group_size=3)


def test_collector_power_sums_follow_the_weight():
    """The kept power sums are recomputed when a weight changes in place (its version)."""
    model = build_tiny("tiny-bert")
    structure = describe(model)
    batch = _batch("tiny-bert", model)

    def neuron_scores():
        with SalienceCollector(model, structure) as collector:
            model(**batch).loss.backward()
        model.zero_grad(set_to_none=True)
        return collector.scores().neurons[structure.ffn[0].name]

    first = neuron_scores()
    assert torch.equal(neuron_scores(), first)
    with torch.no_grad():
        model.get_submodule(structure.ffn[0].out).weight[0, :].mul_(50.0)  # outliers in row 0
    after = neuron_scores()
    apt_salience_module._POWER_SUMS.clear()  # what nothing kept would give
    assert torch.equal(neuron_scores(), after)
    assert not torch.allclose(after, first)


def test_apt_salience_adds_sqrt_kurtosis():
    weight = torch.stack([spike_column(), torch.tensor([1.0, -1.0] * 5)], dim=1)
    # mean of H over tokens = [2, -1] (non-zero) -> outlier terms [sqrt(46/9), 0]
    got = apt_salience(H, G, weight)
    assert torch.allclose(got, torch.tensor([6.0 + math.sqrt(46 / 9), 6.0]), atol=1e-5)
    assert torch.allclose(apt_salience(H, G, weight, use_kurtosis=False), torch.tensor([6.0, 6.0]))


def test_ablation_replacements():
    groups = torch.tensor([[3.0, 4.0], [1.0, -1.0]])
    assert torch.allclose(magnitude_salience(groups), torch.tensor([7.0, 2.0]))
    assert torch.allclose(magnitude_salience(groups, p=2), torch.tensor([5.0, math.sqrt(2)]))
    grad = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    assert torch.allclose(fisher_salience(grad), torch.tensor([10.0, 5.0]))
    assert torch.allclose(fisher_salience(grad, group_size=2), torch.tensor([15.0]))


def test_ema_three_updates_by_hand():
    ema = SalienceEMA()
    for step in ([1.0, 2.0], [3.0, 0.0], [0.0, 4.0]):
        ema.update({"a": torch.tensor(step)})
    # [1, 2] -> 0.85*[1,2] + 0.15*[3,0] = [1.3, 1.7] -> 0.85*[1.3,1.7] + 0.15*[0,4]
    assert torch.allclose(ema.value["a"], torch.tensor([1.105, 2.045]))
    repo = SalienceEMA(zero_init=True)
    for step in ([1.0, 2.0], [3.0, 0.0], [0.0, 4.0]):
        repo.update({"a": torch.tensor(step)})
    # [0.15, 0.3] -> [0.5775, 0.255] -> [0.490875, 0.81675]
    assert torch.allclose(repo.value["a"], torch.tensor([0.490875, 0.81675]))
    with pytest.raises(LmpruneError):
        SalienceEMA(beta=1.0)


def _batch(name: str, model):
    ids = torch.randint(3, 60, (2, 12), generator=torch.Generator().manual_seed(0))
    if name == "tiny-bert":
        return {"input_ids": ids, "labels": torch.tensor([0, 1])}
    return {"input_ids": ids, "labels": ids}


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-bert", "tiny-t5"])
def test_collector_matches_autograd(name):
    model = build_tiny(name)
    structure = describe(model)
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def capture(path):
        def hook(module, inputs):
            inputs[0].retain_grad()
            captured[path] = inputs[0]
        return hook

    with SalienceCollector(model, structure) as collector:
        for path in [s.o for s in structure.attention] + [s.out for s in structure.ffn]:
            handles.append(model.get_submodule(path).register_forward_pre_hook(capture(path)))
        model(**_batch(name, model)).loss.backward()
    for handle in handles:
        handle.remove()
    scores = collector.scores()
    assert set(scores.heads) == {s.name for s in structure.attention}
    assert set(scores.neurons) == {s.name for s in structure.ffn}
    for site in structure.attention:
        h = captured[site.o]
        expected = apt_salience(h.double(), h.grad.double(),
                                model.get_submodule(site.o).weight.double(),
                                group_size=site.head_dim).float()
        assert scores.heads[site.name].shape == (site.num_heads,)
        assert torch.allclose(scores.heads[site.name], expected, rtol=1e-5)
    for site in structure.ffn:
        h = captured[site.out]
        # in float64: the collector forms the outlier term in float64 (from power sums), and
        # near kurtosis 0 the square root magnifies a float32 reference's rounding
        expected = apt_salience(h.double(), h.grad.double(),
                                model.get_submodule(site.out).weight.double()).float()
        assert scores.neurons[site.name].shape == (site.width,)
        assert torch.allclose(scores.neurons[site.name], expected, rtol=1e-5)
    assert (scores.heads[structure.attention[0].name] > 0).all()
    masks = select(structure, scores, 0.5, ["heads", "neurons"])
    assert masks.neurons[structure.ffn[0].name].sum() == structure.ffn[0].width // 2


def test_collector_no_grad_sums_and_cleanup():
    model = build_tiny("tiny-llama")
    structure = describe(model)
    batch = _batch("tiny-llama", model)
    site = structure.ffn[0]
    with SalienceCollector(model, structure, use_kurtosis=False) as collector:
        with torch.no_grad():
            model(**batch)
    assert torch.equal(collector.scores().neurons[site.name], torch.zeros(site.width))
    with SalienceCollector(model, structure) as once:
        model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)
    with SalienceCollector(model, structure) as twice:
        model(**batch).loss.backward()
        model(**batch).loss.backward()
    assert torch.allclose(twice.scores().neurons[site.name], 2 * once.scores().neurons[site.name])
    assert not model.get_submodule(site.out)._forward_pre_hooks
    ema = SalienceEMA()
    ema.update(once.as_dict())
    assert torch.equal(ema.value[f"neurons/{site.name}"], once.scores().neurons[site.name])


def test_hidden_outlier_term_by_hand():
    weight = torch.stack([spike_column(), torch.tensor([1.0, -1.0] * 5)])  # [2 rows, 10 units]
    got = hidden_outlier_term(weight, torch.full((3, 10), 2.0))
    assert torch.allclose(got, torch.tensor([math.sqrt(46 / 9), 0.0]), atol=1e-5)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-bert"])
def test_collector_hidden_matches_autograd(name):
    model = build_tiny(name)
    structure = describe(model)
    paths = [s.o for s in structure.attention] + [s.out for s in structure.ffn]
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def capture(path):
        def hook(module, inputs, output):
            output.retain_grad()
            captured[path] = (inputs[0], output)
        return hook

    with SalienceCollector(model, structure, hidden=True) as collector:
        handles = [model.get_submodule(p).register_forward_hook(capture(p)) for p in paths]
        model(**_batch(name, model)).loss.backward()
    for handle in handles:
        handle.remove()
    expected = torch.zeros(structure.hidden.size)
    for path in paths:
        x, out = captured[path]
        expected += activation_salience(out, out.grad)
        expected += hidden_outlier_term(model.get_submodule(path).weight, x)
    hidden = collector.scores().hidden
    assert hidden.shape == (structure.hidden.size,)
    assert torch.allclose(hidden, expected, rtol=1e-5)
    assert "hidden" in collector.as_dict()


def test_matched_outlier_scale_gives_the_kurtosis_term_the_mean_of_s_tilde():
    model = build_tiny("tiny-bert")
    structure = describe(model)
    batch = _batch("tiny-bert", model)
    runs = {}
    for kurt, scale in ((False, "raw"), (True, "raw"), (True, "matched")):
        with SalienceCollector(model, structure, use_kurtosis=kurt, outlier_scale=scale) as c:
            model(**batch).loss.backward()
        model.zero_grad(set_to_none=True)
        runs[(kurt, scale)] = torch.cat(list(c.scores().neurons.values()))
    plain, raw, matched = runs[(False, "raw")], runs[(True, "raw")], runs[(True, "matched")]
    outlier = raw - plain  # the raw sqrt(kurtosis) term
    factor = plain.mean() / outlier.mean()
    assert torch.allclose(matched, plain + factor * outlier, rtol=1e-5)
    assert float(matched.mean()) == pytest.approx(2 * float(plain.mean()), rel=1e-5)
    with pytest.raises(LmpruneError, match="outlier_scale"):
        SalienceCollector(model, structure, outlier_scale="loud")


@pytest.mark.parametrize("mixed", [False, True])
def test_ema_of_many_keys_is_the_formula_bit_for_bit(mixed):
    """Keys of one dtype go through the fused kernels, mixed dtypes one by one: both give
    exactly beta * old + (1 - beta) * score; a key seen for the first time starts at it."""
    g = torch.Generator().manual_seed(0)
    wide = torch.float64 if mixed else torch.float32
    steps = [{f"k{i}": torch.rand(5, generator=g, dtype=wide if i == 3 else torch.float32)
              for i in range(4)} for _ in range(3)]
    steps[1]["new"] = torch.rand(2, generator=g)
    ema = SalienceEMA(beta=0.85)
    expected: dict[str, torch.Tensor] = {}
    for scores in steps:
        ema.update(scores)
        for key, s in scores.items():
            old = expected.get(key)
            expected[key] = s.clone() if old is None else 0.85 * old + (1 - 0.85) * s
    assert ema.value.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(ema.value[key], value), key
    only_float64 = SalienceEMA()
    only_float64.update({"a": torch.ones(2, dtype=torch.float64)})
    only_float64.update({"a": torch.zeros(2, dtype=torch.float64)})
    assert torch.equal(only_float64.value["a"], torch.full((2,), 0.85, dtype=torch.float64))
