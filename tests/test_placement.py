"""lmprune.placement: a model's layers spread over several devices, and scores that do not
change with it.

This machine has no GPU. The device map is tested on meta models with two fake GPUs (the
decisions lmprune owns: which module goes where); the dispatched code path (accelerate's
hooks moving inputs between devices, gradient hooks firing per device) runs with both
"devices" being the CPU and hooks forced, and must give exactly the single-device scores.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from lmprune import placement as pl
from lmprune.arch import describe
from lmprune.config import load_config
from lmprune.errors import ConfigError, LmpruneError
from lmprune.pruners.sublayer_batch import candidate_perplexities
from lmprune.scorers.taylor import METRICS, taylor_metrics
from lmprune.structures import Masks
from lmprune.zoo import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")
CPU2 = [torch.device("cpu"), torch.device("cpu")]
GPU2 = [torch.device("cuda", 0), torch.device("cuda", 1)]


def llama(layers: int = 3, tie: bool = False, dtype=torch.float64, seed: int = 0):
    config = tiny_config("tiny-llama")
    config.num_hidden_layers, config.tie_word_embeddings = layers, tie
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config, dtype=dtype).eval()


def nbytes(model, names):
    return sum(sum(t.numel() * t.element_size() for t in model.get_submodule(n).parameters())
               for n in names)


def test_a_13b_shape_is_split_into_contiguous_balanced_runs():
    config = LlamaConfig(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                         num_attention_heads=40, vocab_size=32000)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    device_map = pl.spread_map(model, GPU2, [80 * 2**30] * 2)
    order = [device_map[f"model.layers.{i}"].index for i in range(40)]
    assert order == sorted(order) and set(order) == {0, 1}  # contiguous runs
    assert device_map["model.embed_tokens"].index == 0 and device_map["lm_head"].index == 1
    per_gpu = [nbytes(model, [n for n, d in device_map.items() if d.index == i]) for i in (0, 1)]
    layer = nbytes(model, ["model.layers.0"])
    assert abs(per_gpu[0] - per_gpu[1]) <= layer  # balanced within one layer (~0.6 GiB)
    assert sum(per_gpu) == sum(p.numel() * 2 for p in model.parameters())
    uneven = pl.spread_map(model, GPU2, [30 * 2**30, 10 * 2**30])  # by free memory
    share = nbytes(model, [n for n, d in uneven.items() if d.index == 0]) / sum(per_gpu)
    assert share == pytest.approx(0.75, abs=0.02)


def test_tied_weights_stay_on_one_device_and_too_little_memory_is_refused():
    model = llama(layers=4, tie=True)
    device_map = pl.spread_map(model, GPU2, [2**30] * 2)
    assert device_map["lm_head"] == device_map["model.embed_tokens"] == GPU2[0]
    assert device_map["model.layers.3"] == GPU2[1]
    with pytest.raises(LmpruneError, match=r"do not fit 2 device\(s\): cuda:0 would hold .* GiB "
                                           r"of 0.0 GiB available; use more GPUs"):
        pl.spread_map(model, GPU2, [1000, 1000])
    with pytest.raises(LmpruneError, match="fewer blocks than devices"):
        pl.spread_map(llama(layers=1), GPU2 + GPU2[:1], [2**30] * 3)


def spread_copy(model):
    twin = pl.spread(copy.deepcopy(model), CPU2, [2**30] * 2)
    assert twin.model.layers[1]._hf_hook.execution_device == "cpu"  # accelerate's hooks are on
    assert len(twin.hf_device_map) == 4 + len(twin.model.layers)
    return twin


def test_taylor_scores_on_a_spread_model_are_the_single_device_scores(recwarn):
    """Every metric, micro-batches and layer chunks (per-element buffers), all kinds."""
    model, samples = llama(), torch.randint(3, 128, (8, 64), generator=torch.Generator()
                                           .manual_seed(0))
    options = dict(kinds=("heads", "neurons", "hidden", "layers"), batch_size=2,
                   buffer_fraction=0.05, progress=False)
    single = taylor_metrics(model, describe(model), samples, METRICS, **options)
    twin = spread_copy(model)
    spread = taylor_metrics(twin, describe(twin), samples, METRICS, **options)
    for metric in METRICS:
        a, b = single[metric], spread[metric]
        for kind in ("heads", "neurons"):
            for site in getattr(a, kind):
                torch.testing.assert_close(getattr(b, kind)[site], getattr(a, kind)[site],
                                           rtol=1e-12, atol=0)
        torch.testing.assert_close(b.hidden, a.hidden, rtol=1e-12, atol=0)
        assert b.layers == pytest.approx(a.layers, rel=1e-12)
    assert all(not p.requires_grad or p.grad is None for p in twin.parameters())
    assert not [w for w in recwarn if "one pass" in str(w.message)]  # really micro-batched


def test_ri_perplexities_on_a_spread_model_are_the_single_device_ones():
    model = llama(dtype=torch.float32)
    structure = describe(model)
    windows = torch.randint(3, 128, (3, 10), generator=torch.Generator().manual_seed(1))
    names = [s.name for s in structure.attention + structure.ffn]
    base = Masks.ones(structure, ("attention", "ffn"))
    single = candidate_perplexities(model, structure, windows, base, names, rows_per_pass=6)
    twin = spread_copy(model)
    spread = candidate_perplexities(twin, describe(twin), windows, base, names, rows_per_pass=6)
    assert spread == pytest.approx(single, rel=1e-6)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Fake H200")


def test_which_gpus_a_spread_placement_uses(two_gpus):
    assert pl.resolve_placement("auto", "spread").devices == GPU2
    assert pl.resolve_placement("cuda", "spread").describe() == \
        "spread over cuda:0 (Fake H200), cuda:1 (Fake H200)"
    assert pl.resolve_placement("cuda:1,0", "spread").devices == GPU2[::-1]
    assert pl.resolve_placement("cuda:0,cuda:1", "spread").spread
    assert pl.resolve_placement("auto").devices == GPU2[:1]  # single: one GPU
    with pytest.raises(LmpruneError, match=r"cuda:0,2 was requested but this machine has 2 GPU"):
        pl.resolve_placement("cuda:0,2", "spread")
    with pytest.raises(LmpruneError, match="each GPU may be named once"):
        pl.resolve_placement("cuda:1,1", "spread")


def test_spread_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    placement = pl.resolve_placement("auto", "spread")
    assert placement.devices == [torch.device("cpu")] and not placement.spread
    assert "no GPU here, running on the CPU" in placement.describe()
    with pytest.raises(LmpruneError, match="no CUDA GPU is available"):
        pl.resolve_placement("cuda:0,1", "spread")


@pytest.mark.parametrize("overrides, message", [
    (["device=cuda:0,1"], "names several GPUs; set placement: spread"),
    (["placement=spread", "device=cpu"], "placement: spread needs GPUs"),
    (["placement=spread", "device=cuda:1"], "placement: spread needs GPUs"),
    (["placement=everywhere"], "placement"),
])
def test_config_checks_device_and_placement_together(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("prune", overrides)


def test_prune_cli_spread_gives_the_single_device_plan(tmp_path, monkeypatch, capsys):
    """The whole prune workflow (score, remove, evaluate, save) on a spread model."""
    from lmprune.cli.main import main
    from lmprune.recipes import prune as recipe

    monkeypatch.setattr(recipe, "resolve_placement",
                        lambda device, placement: pl.Placement(placement, CPU2[:1 + (
                            placement == "spread")]))
    common = ["--method", "taylor", "--model", "tiny-llama", "--sparsity", "0.3",
              "eval.speed=false", "eval.zero_shot=[]", "eval.max_windows=2",
              "data.num_samples=4", "prune.layer_range=null"]
    for kind in ("single", "spread"):
        assert main(["prune", *common, "--placement", kind, "--out", str(tmp_path / kind)]) == 0
    plans = [json.loads((tmp_path / k / "model/lmprune_plan.json").read_text())
             for k in ("single", "spread")]
    assert plans[0]["keep"] == plans[1]["keep"]
    metrics = json.loads((tmp_path / "spread/metrics.json").read_text())
    assert metrics["device"] == "spread over cpu, cpu"
    assert metrics["after"]["perplexity"] == json.loads(
        (tmp_path / "single/metrics.json").read_text())["after"]["perplexity"]
    assert "[prune] device: spread over cpu, cpu, float32" in capsys.readouterr().out
