"""Taylor importance against values computed by hand from plain-autograd gradients."""
from __future__ import annotations

import pytest
import torch

from lmprune.arch import describe
from lmprune.scorers.coupling import Slice, aggregate, index_sums, per_unit
from lmprune.scorers.importances import GroupImportances
from lmprune.scorers.taylor import METRICS, salience, taylor_metrics

from scorer_toys import (AGGREGATIONS, group_parts, hidden_parts, one_layer_llama,
                         reference_aggregate, reference_channels, reference_gradients,
                         reference_salience, token_samples, whole_parts)

L0 = "model.layers.0."
ATTN = [L0 + f"self_attn.{x}_proj.weight" for x in "qkvo"]
FFN = [L0 + f"mlp.{x}_proj.weight" for x in ("gate", "up", "down")]
LAYER = ATTN + FFN + [L0 + "input_layernorm.weight", L0 + "post_attention_layernorm.weight"]


def test_salience_of_a_hand_written_matrix():
    """Eqs. 3-5 on numbers small enough to check on paper."""
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    g = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    h = torch.tensor([[1.0, 0.5], [0.0, 2.0]])
    rows, cols = Slice("neurons", "x", 0), Slice("hidden", "", 1)
    # g*w = [[0.5, -2], [6, 0]]
    vector = salience("vector", w, g, h)
    assert per_unit(vector, rows, {}).abs().tolist() == [1.5, 6.0]
    assert per_unit(vector, cols, {}).abs().tolist() == [6.5, 2.0]
    element1 = salience("element1", w, g, h)
    assert per_unit(element1, rows, {}).tolist() == [2.5, 6.0]
    # g*w - 0.5*w*h*w = [[0.5 - 0.5, -2 - 1], [6 - 0, 0 - 16]] = [[0, -3], [6, -16]]
    element2 = salience("element2", w, g, h)
    assert per_unit(element2, rows, {}).tolist() == [3.0, 22.0]
    assert per_unit(element2, Slice("layers", "l"), {}).tolist() == [25.0]
    heads = Slice("heads", "a", 0, unit=2)  # both rows are one group
    assert per_unit(element1, heads, {}).tolist() == [8.5]
    parts = [torch.tensor([1.0, 4.0]), torch.tensor([3.0, 2.0]), torch.tensor([2.0, 0.5])]
    expected = {"sum": [6, 6.5], "mean": [2, 6.5 / 3], "max": [3, 4], "prod": [6, 4],
                "last": [2, 0.5]}
    for how, values in expected.items():
        assert aggregate(parts, how).tolist() == pytest.approx(values)


@pytest.fixture(scope="module")
def gqa_case():
    model = one_layer_llama(num_kv_heads=2)
    samples = token_samples(4, 16)
    grads, hess = reference_gradients(model, samples)
    structure = describe(model)
    scores = {how: taylor_metrics(model, structure, samples, METRICS, how, progress=False)
              for how in AGGREGATIONS}
    return model, grads, hess, scores


def _expected(model, grads, hess, metric, parts, how, channels=None):
    """Group form (``channels=None``): one number per tensor, combined. Channel form:
    per-channel values per tensor, combined channel by channel, then summed."""
    params = dict(model.named_parameters())
    if channels is None:
        values = [reference_salience(metric, params[n].detach(), grads[n], hess[n], idx)
                  for n, idx in parts]
        return reference_aggregate(values, how)
    values = [reference_channels(metric, params[n].detach(), grads[n], hess[n], idx, channels)
              for n, idx in parts]
    return float(reference_aggregate(values, how).sum())


@pytest.mark.parametrize("how", AGGREGATIONS)
@pytest.mark.parametrize("metric", METRICS)
def test_unit_scores_match_hand_computation(gqa_case, metric, how):
    """Channel reduction (the default): LLM-Pruner's per-row values, aggregated per channel,
    summed over a head's 8 channels; a kv group's 4 query heads fold onto its 8 channels."""
    model, grads, hess, scores = gqa_case
    got = scores[how][metric]
    site = "layers.0.attn"
    for kind, count, table in (("heads", 8, got.heads[site]), ("kv_groups", 2, got.kv_groups[site]),
                               ("neurons", 96, got.neurons["layers.0.ffn"])):
        channels = 8 if kind != "neurons" else 1
        want = [_expected(model, grads, hess, metric, group_parts(kind, u), how, channels)
                for u in range(count)]
        assert table.tolist() == pytest.approx(want, rel=1e-5, abs=1e-30), kind
    want = [_expected(model, grads, hess, metric, hidden_parts(c), how) for c in range(64)]
    assert got.hidden.tolist() == pytest.approx(want, rel=1e-5, abs=1e-30)


@pytest.mark.parametrize("how", AGGREGATIONS)
@pytest.mark.parametrize("metric", ["vector", "element1"])
def test_group_reduction_matches_hand_computation(gqa_case, metric, how):
    """``reduction="group"``: |sum over the whole head| per tensor, combined per head."""
    model, grads, hess, _ = gqa_case
    samples = token_samples(4, 16)
    got = taylor_metrics(model, describe(model), samples, (metric,), how,
                         kinds=("heads", "kv_groups"), reduction="group", progress=False)[metric]
    for kind, count, table in (("heads", 8, got.heads["layers.0.attn"]),
                               ("kv_groups", 2, got.kv_groups["layers.0.attn"])):
        want = [_expected(model, grads, hess, metric, group_parts(kind, u), how)
                for u in range(count)]
        assert table.tolist() == pytest.approx(want, rel=1e-5, abs=1e-30), kind


def test_llm_pruner_vector_form_by_hand():
    """Two heads of two rows: per-row |sum| then summed over the head, against the whole-head
    |sum| of the group form, on numbers small enough to check on paper."""
    w = torch.tensor([[1.0, 2.0], [3.0, -4.0], [1.0, 1.0], [2.0, 0.0]])
    g = torch.tensor([[1.0, -1.0], [1.0, 1.0], [0.5, 0.5], [-1.0, 3.0]])
    # g*w rows: [1, -2] -> -1; [3, -4] -> -1; [0.5, 0.5] -> 1; [-2, 0] -> -2
    head = Slice("heads", "a", 0, 2, 2)
    parts = GroupImportances()
    parts.add(0, 0, head, index_sums(salience("vector", w, g, None), head, {}), signed=True)
    assert parts.aggregated("sum", "channel")[("heads", "a")].tolist() == [2.0, 3.0]
    assert parts.aggregated("sum", "group")[("heads", "a")].tolist() == [2.0, 1.0]
    # channel: |-1| + |-1|, |1| + |-2|; group: |-1 - 1|, |1 - 2|


def test_param_second_by_hand():
    """LLM-Pruner's param_second: sum over a row of W * acc_grad * W."""
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    h = torch.tensor([[1.0, 0.5], [0.0, 2.0]])
    values = salience("param_second", w, None, h)  # [[1, 2], [0, 32]]
    assert per_unit(values, Slice("neurons", "x", 0), {}).tolist() == [3.0, 32.0]


@pytest.mark.parametrize("how", AGGREGATIONS)
@pytest.mark.parametrize("metric", METRICS)
def test_layer_and_sublayer_scores_match_hand_computation(gqa_case, metric, how):
    model, grads, hess, scores = gqa_case
    got = scores[how][metric]
    attention = whole_parts(ATTN + [L0 + "input_layernorm.weight"])
    ffn = whole_parts(FFN + [L0 + "post_attention_layernorm.weight"])
    layer = whole_parts(LAYER)
    for table, key, parts in ((got.attention, "layers.0.attn", attention),
                              (got.ffn, "layers.0.ffn", ffn), (got.layers, "layers.0", layer)):
        want = _expected(model, grads, hess, metric, parts, how)  # one channel per tensor
        assert table[key] == pytest.approx(want, rel=1e-5), key


def test_multi_head_attention_heads_include_key_and_value_rows():
    model = one_layer_llama(num_kv_heads=8)
    samples = token_samples(3, 12, seed=1)
    grads, hess = reference_gradients(model, samples)
    got = taylor_metrics(model, describe(model), samples, ("element1",), "sum",
                         kinds=("heads", "kv_groups"), progress=False)["element1"]
    a = L0 + "self_attn."
    for h in range(8):
        rows, cols = (slice(h * 8, h * 8 + 8),), (slice(None), slice(h * 8, h * 8 + 8))
        parts = [(a + "q_proj.weight", rows), (a + "k_proj.weight", rows),
                 (a + "v_proj.weight", rows), (a + "o_proj.weight", cols)]
        want = _expected(model, grads, hess, "element1", parts, "sum")
        assert float(got.heads["layers.0.attn"][h]) == pytest.approx(want, rel=1e-5)
    # with one query head per key/value group, a group is its head
    assert torch.allclose(got.kv_groups["layers.0.attn"], got.heads["layers.0.attn"])


def test_second_order_term_changes_the_scores(gqa_case):
    _, _, _, scores = gqa_case
    first, second = scores["sum"]["element1"], scores["sum"]["element2"]
    assert not torch.equal(first.neurons["layers.0.ffn"], second.neurons["layers.0.ffn"])
