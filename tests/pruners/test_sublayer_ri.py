"""Sublayer pruning by relative impact (RI): formulas, search variants, budgets, end to end.

The constructed cases use "signal models": tiny LLaMAs whose weights are zero except a few
programmed sublayers, evaluated on windows that repeat one token. Every position then holds
the same residual vector h = B*e0 + writes, where e0 is a large "ballast" channel that keeps
every RMSNorm input ~ sqrt(d) * h / B, so each programmed sublayer writes a nearly fixed
amount into one channel. The LM head reads only channel U for the repeated token, so
perplexity is 1 + 127 * exp(-logit) in closed form and RI orderings can be designed.
"""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmprune import load_pretrained
from lmprune.arch import describe
from lmprune.config import load_config
from lmprune.data.calibration import Calibration, build_calibration
from lmprune.errors import LmpruneError
from lmprune.evaluation.perplexity import perplexity_of_windows
from lmprune.pruners.sublayer import candidate_kinds, plot_ri, search_from_run
from lmprune.pruners.sublayer_search import masked_perplexity, removal_masks, ri_search
from lmprune.registry import METHODS, load_builtin_methods
from lmprune.structures import apply_masks, remove
from lmprune.structures.counting import count_parameters, sublayer_cost
from lmprune.structures.export import save_pretrained
from lmprune.zoo import build_tiny, build_tiny_tokenizer, tiny_config

TOKEN, U, P = 5, 1, 2  # repeated token; channel read by the LM head; the "signal" channel
BALLAST = 100.0


pytestmark = pytest.mark.usefixtures("one_thread")


def deeper(name: str, layers: int, seed: int = 0, dtype=torch.float32) -> torch.nn.Module:
    """A tiny alias rebuilt with ``layers`` layers (random weights, seeded)."""
    config = tiny_config(name)
    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None):  # qwen2: one attention type per layer
        config.layer_types = [config.layer_types[0]] * layers
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config, dtype=dtype).eval()


def tiny_llama(layers: int, seed: int = 0) -> torch.nn.Module:
    return deeper("tiny-llama", layers, seed)


def random_windows(n: int = 4, length: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 128, (n, length), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------- signal models

def signal_model(layers: int) -> torch.nn.Module:
    """All sublayers zero; token TOKEN embeds as BALLAST * e0; the head reads 10 * x[U]."""
    model = tiny_llama(layers)
    with torch.no_grad():
        for p in model.model.layers.parameters():
            if p.dim() == 2:
                p.zero_()
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[TOKEN, 0] = BALLAST
        model.lm_head.weight.zero_()
        model.lm_head.weight[TOKEN, U] = 10.0  # logit = 10 * 8 * h[U] / |h| ~ 0.8 * h[U]
    return model


@torch.no_grad()
def ffn_writes(model, layer: int, channel: int, amount: float) -> None:
    """FFN neuron 0 = silu(x0) * x0 / 8 ~ silu(8): writes ~amount into ``channel``."""
    mlp = model.model.layers[layer].mlp
    mlp.gate_proj.weight[0, 0] = 1.0
    mlp.up_proj.weight[0, 0] = 1.0 / 8
    mlp.down_proj.weight[channel, 0] = amount / torch.nn.functional.silu(torch.tensor(8.0))


@torch.no_grad()
def attention_writes(model, layer: int, channel: int, amount: float) -> None:
    """Value dim 0 of kv head 0 = x0 / 8 ~ 1 at every position; o_proj copies it to ``channel``."""
    attn = model.model.layers[layer].self_attn
    attn.v_proj.weight[0, 0] = 1.0 / 8
    attn.o_proj.weight[channel, 0] = amount


@torch.no_grad()
def ffn_or_gate(model, layer: int, amount: float, k: float = 50.0, step: float = 0.4) -> None:
    """Writes ``amount`` into U once x[P] >= ~step + 1/k (saturating), ~0 when x[P] = 0:
    silu(k x_P) - silu(k (x_P - step)) is a ramp from 0 to k * step."""
    mlp = model.model.layers[layer].mlp
    mlp.gate_proj.weight[0, P] = k
    mlp.gate_proj.weight[1, P] = k
    mlp.gate_proj.weight[1, 0] = -k * step / 8
    mlp.up_proj.weight[0:2, 0] = 1.0 / 8
    mlp.down_proj.weight[U, 0] = amount / (k * step)
    mlp.down_proj.weight[U, 1] = -amount / (k * step)


def constant_windows() -> torch.Tensor:
    return torch.full((2, 8), TOKEN, dtype=torch.long)


# ----------------------------------------------------------------------- RI formulas

@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2"])
def test_ri_equals_perplexity_of_physically_removed_sublayer(name):
    model = deeper(name, 3, seed=1, dtype=torch.float64)
    structure, windows = describe(model), random_windows()
    result = ri_search(model, structure, windows, 0.0, normalize=True, progress=False)
    base = perplexity_of_windows(model, windows)
    assert result.base_perplexity == pytest.approx(base, rel=1e-12)
    assert result.history == [] and not any(float(t) == 0 for _, _, t in result.masks.items())
    for site in structure.attention + structure.ffn:
        kind = "ffn" if site in structure.ffn else "attention"
        pruned = remove(copy.deepcopy(model), removal_masks(structure, {site.name: kind}))
        expected = (perplexity_of_windows(pruned, windows) - base) / base
        assert result.ri_initial[site.name] == pytest.approx(expected, rel=1e-6, abs=1e-12)
        cost = sublayer_cost(model, site)
        assert result.score_initial[site.name] == pytest.approx(expected / cost, rel=1e-6,
                                                                abs=1e-15)


def test_progressive_step_keeps_earlier_removals_masked():
    model = tiny_llama(3, seed=2).double()
    structure, windows = describe(model), random_windows()
    result = ri_search(model, structure, windows, 0.0, progress=False)  # for ri_initial only
    result = ri_search(model, structure, windows, 0.4, budget="sublayers", progress=False)
    first, second = result.history[0], result.history[1]
    assert first["removed"] == min(result.score_initial, key=result.score_initial.get)
    removed = {first["removed"]: first["kind"]}
    pruned = remove(copy.deepcopy(model), removal_masks(structure, removed))
    ppl_after_first = perplexity_of_windows(pruned, windows)
    assert first["perplexity"] == pytest.approx(ppl_after_first, rel=1e-9)
    for name, row in second["candidates"].items():
        kind = "ffn" if name.endswith("ffn") else "attention"
        both = remove(copy.deepcopy(model), removal_masks(structure, {**removed, name: kind}))
        ppl = perplexity_of_windows(both, windows)
        assert row["perplexity"] == pytest.approx(ppl, rel=1e-9)
        assert row["ri"] == pytest.approx((ppl - ppl_after_first) / ppl_after_first, rel=1e-6,
                                          abs=1e-12)
    assert first["removed"] not in second["candidates"]


# ----------------------------------------------------------------------- search variants

def redundant_pair_model() -> torch.nn.Module:
    """FFN1 and FFN2 write the same signal; FFN3 turns 'any signal' into +8 logit; FFN0
    adds +4 logit directly. Alone, either copy is redundant (RI <= 0); together they
    carry FFN3's whole contribution."""
    model = signal_model(4)
    ffn_writes(model, 0, U, 5.0)
    ffn_writes(model, 1, P, 10.0)
    ffn_writes(model, 2, P, 10.0)
    ffn_or_gate(model, 3, 10.0)
    return model


def test_progressive_and_one_shot_differ_on_redundant_copies():
    model, windows = redundant_pair_model(), constant_windows()
    structure = describe(model)
    kwargs = dict(normalize=False, budget="sublayers", kinds=("ffn",), progress=False)
    one_shot = ri_search(model, structure, windows, 0.5, progressive=False, **kwargs)
    progressive = ri_search(model, structure, windows, 0.5, progressive=True, **kwargs)
    ri = one_shot.ri_initial
    copies = {"layers.1.ffn", "layers.2.ffn"}
    assert max(ri[n] for n in copies) <= 1e-3 < ri["layers.0.ffn"] < ri["layers.3.ffn"]
    assert set(one_shot.removed) == copies
    assert progressive.removed[0] in copies and progressive.removed[1] == "layers.0.ffn"
    other = (copies - {progressive.removed[0]}).pop()
    assert progressive.history[1]["candidates"][other]["ri"] > 1.0  # now irreplaceable
    assert progressive.final_perplexity < 1.2 < 2.0 < one_shot.final_perplexity
    assert one_shot.ri_initial == progressive.ri_initial


def test_normalization_changes_the_choice():
    """RI(attn 0) < RI(ffn 0) but RI(attn 0)/10,304 > RI(ffn 0)/18,496 parameters."""
    model, windows = signal_model(2), constant_windows()
    attention_writes(model, 0, U, 1.25)  # -1.0 logit when removed
    ffn_writes(model, 0, U, 1.625)  # -1.3 logit
    attention_writes(model, 1, U, 5.0)
    ffn_writes(model, 1, U, 5.0)
    structure = describe(model)
    kwargs = dict(budget="sublayers", progressive=True, progress=False)
    plain = ri_search(model, structure, windows, 0.25, normalize=False, **kwargs)
    normalized = ri_search(model, structure, windows, 0.25, normalize=True, **kwargs)
    ri = plain.ri_initial
    assert 0 < ri["layers.0.attn"] < ri["layers.0.ffn"] < ri["layers.1.attn"]
    assert plain.removed == ["layers.0.attn"]
    assert normalized.removed == ["layers.0.ffn"]
    costs = {c.name: c.cost for c in normalized.candidates}
    assert costs["layers.0.attn"] == 2 * 64 * 64 + 2 * 16 * 64 + 64  # q, o; k, v; norm
    assert costs["layers.0.ffn"] == 3 * 64 * 96 + 64
    for name, value in normalized.score_initial.items():
        assert value == pytest.approx(ri[name] / costs[name], rel=1e-6)


# ----------------------------------------------------------------------- budgets

@pytest.mark.parametrize("progressive", [True, False])
def test_params_budget_is_met_by_the_last_removal(progressive):
    model = tiny_llama(4, seed=3)
    structure, windows = describe(model), random_windows(2, 16)
    body = count_parameters(model, structure).body
    result = ri_search(model, structure, windows, 0.3, progressive=progressive, progress=False)
    costs = {c.name: c.cost for c in result.candidates}
    last = costs[result.removed[-1]]
    assert result.target == pytest.approx(0.3 * body)
    assert result.params_removed >= 0.3 * body > result.params_removed - last
    assert [s["params_removed"] for s in result.history] == \
        [sum(costs[n] for n in result.removed[:i + 1]) for i in range(len(result.removed))]
    zeros = {n for kind, n, t in result.masks.items() if float(t) == 0}
    assert zeros == set(result.removed)
    pruned = remove(copy.deepcopy(model), result.masks)
    assert count_parameters(pruned).body == body - result.params_removed


def test_sublayers_budget_keeps_one_attention_sublayer():
    model = tiny_llama(4, seed=4)
    structure = describe(model)
    result = ri_search(model, structure, random_windows(2, 16), 0.8, budget="sublayers",
                       kinds=("attention",), progress=False)
    assert len(result.removed) == 3  # floor(0.8 * 4)
    assert sum(float(t) for t in result.masks.attention.values()) == 1.0
    assert all(float(t) == 1 for t in result.masks.ffn.values())


def test_unreachable_budgets_and_bad_inputs_raise():
    model = tiny_llama(2, seed=5)
    structure, windows = describe(model), random_windows(2, 16)
    with pytest.raises(LmpruneError, match="cannot reach sparsity 0.99"):
        ri_search(model, structure, windows, 0.99, progress=False)
    with pytest.raises(LmpruneError, match="one attention sublayer always stays"):
        ri_search(model, structure, windows, 0.3, kinds=("attention",), progress=False)
    with pytest.raises(LmpruneError, match="sublayer.budget"):
        ri_search(model, structure, windows, 0.3, budget="flops", progress=False)
    with pytest.raises(LmpruneError, match=r"in \[0, 1\)"):
        ri_search(model, structure, windows, 1.0, progress=False)
    with pytest.raises(LmpruneError, match="shape"):
        ri_search(model, structure, windows[0], 0.3, progress=False)
    bert = build_tiny("tiny-bert")
    with pytest.raises(LmpruneError, match="causal-LM perplexity"):
        ri_search(bert, describe(bert), windows, 0.3, progress=False)
    run = load_config("demo", ["prune.method=sublayer-ri"])
    with pytest.raises(LmpruneError, match="calibration windows"):
        METHODS.get("sublayer-ri")(model, structure, run, None)


# ----------------------------------------------------------------------- end to end

def test_registered_method_masks_remove_save_and_reload(tmp_path):
    load_builtin_methods()
    model = tiny_llama(4, seed=6)
    tokenizer = build_tiny_tokenizer("tiny-llama")
    structure = describe(model)
    calibration = build_calibration(tokenizer, num_samples=2, seq_len=32, heldout=2,
                                    max_texts=200)
    run = load_config("demo", ["prune.method=sublayer-ri", "prune.sparsity=0.25",
                               "sublayer.progressive=false", "sublayer.finish=none"])
    masks = METHODS.get("sublayer-ri")(model, structure, run, calibration)
    result = search_from_run(model, structure, run, calibration, progress=False)
    assert result.settings["windows"] == [2, 32]  # the held-out windows were used
    assert json.loads(json.dumps(result.as_dict()))["removed"] == result.removed
    assert {n for _, n, t in masks.items() if float(t) == 0} == set(result.removed)
    ids = calibration.samples
    with apply_masks(model, masks, structure), torch.no_grad():
        expected = model(input_ids=ids).logits
    pruned = remove(copy.deepcopy(model), masks)
    save_pretrained(pruned, tmp_path / "pruned", tokenizer=tokenizer)
    again = load_pretrained(tmp_path / "pruned").eval()
    with torch.no_grad():
        assert torch.allclose(again(input_ids=ids).logits, expected, atol=1e-4)
    png = plot_ri(result, tmp_path / "plots" / "ri.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_structures_pick_candidate_kinds():
    assert candidate_kinds(["heads", "neurons"]) == ("attention", "ffn")
    assert candidate_kinds(["ffn"]) == ("ffn",)
    assert candidate_kinds(["attention", "ffn", "layers"]) == ("attention", "ffn")
    calibration = Calibration(random_windows(2, 16), None, None, "random", "train", 16)
    model = tiny_llama(2, seed=7)
    run = load_config("demo", ["prune.method=sublayer-ri", "prune.sparsity=0.2",
                               "prune.structures=[ffn]", "prune.layer_range=[1,2]",
                               "sublayer.finish=none"])
    result = search_from_run(model, describe(model), run, calibration, progress=False)
    assert [c.name for c in result.candidates] == ["layers.1.ffn"]
    assert result.removed == ["layers.1.ffn"] and not math.isnan(result.final_perplexity)


@pytest.mark.parametrize("progressive", [True, False])
def test_finishing_with_neurons_lands_on_the_budget(progressive):
    """finish=neurons: no removal overshoots; FFN neurons of the remaining FFN sublayers fill
    the rest, so the physically pruned model has lost the target share within 0.2 points."""
    model = tiny_llama(4, seed=3)
    structure, windows = describe(model), random_windows(2, 16)
    body = count_parameters(model, structure).body
    for target in (0.2, 0.3, 0.45):
        result = ri_search(model, structure, windows, target, progressive=progressive,
                           finish="neurons", progress=False)
        pruned = remove(copy.deepcopy(model), result.masks)
        achieved = 1 - count_parameters(pruned).body / body
        assert abs(achieved - target) <= 0.002, (target, achieved)
        assert result.achieved == pytest.approx(achieved, abs=1e-9)
        sublayers = sum(c.cost for c in result.candidates if c.name in result.removed)
        assert sublayers <= (target + 0.002) * body  # the sublayer part never overshoots
        gone = set(result.removed)
        assert all(site not in gone for site in result.finish["neurons"])
        with apply_masks(model, result.masks, structure):
            masked = perplexity_of_windows(model, windows)
        assert result.final_perplexity == pytest.approx(masked, rel=1e-9)


def test_finishing_neurons_go_in_aligned_chunks():
    """With a chunk of 8 (prune.round_to's rule for wide FFNs: 32 for SmolLM2's 1536), every
    finishing site loses a multiple of 8 neurons, and the total is the remainder in whole
    chunks (within half a chunk)."""
    from lmprune.pruners.sublayer_finish import finish_with_neurons
    from lmprune.structures.counting import neuron_cost

    model = tiny_llama(4, seed=3)
    structure, windows = describe(model), random_windows(2, 16)
    base = removal_masks(structure, {})
    per_neuron = neuron_cost(model, structure.ffn[0])
    for neurons in (5, 20, 37):
        masks, record = finish_with_neurons(model, structure, windows, {}, base,
                                            neurons * per_neuron, progress=False, round_to=8)
        counts = list(record["neurons"].values())
        assert all(c % 8 == 0 for c in counts), counts
        assert abs(sum(counts) - neurons) <= 4
        assert max(counts) - min(counts) <= 8
        for site in structure.ffn:
            assert int((masks.neurons[site.name] == 0).sum()) == record["neurons"][site.name]
    exact, record = finish_with_neurons(model, structure, windows, {}, base, 37 * per_neuron,
                                        progress=False, round_to=1)
    assert sum(record["neurons"].values()) == 37  # round_to=1: neuron by neuron, as before


def test_batched_candidates_equal_one_at_a_time():
    """Several candidates per forward (rows_per_pass) give the perplexities of one forward
    per candidate with the scalar mask."""
    from lmprune.pruners.sublayer_batch import candidate_perplexities

    model = deeper("tiny-llama", 3, seed=2, dtype=torch.float64)
    structure, windows = describe(model), random_windows(3, 16)
    removed = {"layers.1.ffn": "ffn"}
    names = [s.name for s in structure.attention] + ["layers.0.ffn", "layers.2.ffn"]
    batched = candidate_perplexities(model, structure, windows,
                                     removal_masks(structure, removed), names, rows_per_pass=9)
    for name in names:
        kind = "ffn" if name.endswith("ffn") else "attention"
        alone = masked_perplexity(model, structure, windows, {**removed, name: kind})
        assert batched[name] == pytest.approx(alone, rel=1e-10), name
