"""Pruned -> save -> fresh-process stock load -> identical logits; plans replay exactly."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmprune import load_pretrained
from lmprune.arch import describe
from lmprune.structures import Masks, remove
from lmprune.structures.export import REMOTE_FILE, save_pretrained
from lmprune.structures.kv_cache import cache_arguments, output_cache
from lmprune.structures.plan import PruningPlan, apply_plan

from mask_recipes import TINY, fresh, inputs_for, logits, random_masks

EVERYTHING = ("heads", "kv_groups", "neurons", "hidden", "attention", "ffn", "layers")
AUTO = {"t5": "AutoModelForSeq2SeqLM", "bert": "AutoModelForSequenceClassification",
        "mpnet": "AutoModelForSequenceClassification",
        "roberta": "AutoModelForSequenceClassification"}

FRESH_PROCESS = """
import json, sys, torch, transformers
cases = json.load(open(sys.argv[1]))
for case in cases:
    cls = getattr(transformers, case["auto"])
    model = cls.from_pretrained(case["path"], trust_remote_code=case["remote"]).eval()
    inputs = torch.load(case["inputs"])
    with torch.no_grad():
        out = model(**inputs).logits
    print(case["name"], float((out - torch.load(case["expected"])).abs().max()))
"""


def uniform_masks(structure) -> Masks:
    """Same widths in every layer and no removed sublayer: expressible by a stock config."""
    masks = Masks.ones(structure, ("neurons", "layers"))
    for name in masks.neurons:
        masks.neurons[name][: masks.neurons[name].numel() // 3] = 0
    masks.layers[structure.layers[-1].name] = torch.tensor(0.0)
    if any(site.group_size > 1 for site in structure.attention):
        masks.kv_groups = {s.name: torch.tensor([1.0] + [0.0] * (s.num_kv_heads - 1)) for s in structure.attention}
    return masks


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Every tiny model pruned two ways (uniform and everything-random), saved."""
    root = tmp_path_factory.mktemp("pruned")
    cases = []
    for name in TINY:
        for variant in ("uniform", "random"):
            model, structure = fresh(name)
            masks = uniform_masks(structure) if variant == "uniform" else random_masks(structure, EVERYTHING, seed=5)
            plan = PruningPlan.from_masks(structure, masks, {"variant": variant})
            remove(model, masks, structure)
            path = root / f"{name}-{variant}"
            result = save_pretrained(model, path, plan=plan)
            inputs = inputs_for(model)
            torch.save(inputs, path / "inputs.pt")
            torch.save(logits(model, inputs), path / "expected.pt")
            cases.append({"name": f"{name}-{variant}", "path": str(path), "format": result.format,
                          "remote": result.format == "remote-code", "model": name,
                          "auto": AUTO.get(model.config.model_type, "AutoModelForCausalLM"),
                          "inputs": str(path / "inputs.pt"), "expected": str(path / "expected.pt")})
    return cases


def test_fresh_process_stock_load(saved, tmp_path):
    spec = tmp_path / "cases.json"
    spec.write_text(json.dumps(saved))
    proc = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(spec)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    diffs = dict(line.split() for line in proc.stdout.strip().splitlines())
    assert set(diffs) == {case["name"] for case in saved}
    for name, diff in diffs.items():
        assert float(diff) <= 1e-5, f"{name}: reloaded logits differ by {diff}"


def test_formats(saved):
    formats = {case["name"]: case["format"] for case in saved}
    # uniform pruning of decoders is expressible with stock configs: no remote code at all
    for name in ("tiny-llama", "tiny-qwen2", "tiny-mistral", "tiny-bert", "tiny-mpnet"):
        assert formats[f"{name}-uniform"] == "stock"
    for case in saved:
        assert (Path(case["path"]) / REMOTE_FILE).exists() == case["remote"]
        config = json.loads((Path(case["path"]) / "config.json").read_text())
        assert ("auto_map" in config) == case["remote"]
    # BERT head pruning changes hidden/heads, from which stock BERT derives the head size
    assert formats["tiny-bert-random"] == "remote-code"
    assert formats["tiny-mpnet-random"] == "remote-code"


@pytest.mark.parametrize("name", TINY)
def test_load_pretrained_without_flag(saved, name):
    for case in (c for c in saved if c["model"] == name):
        model = load_pretrained(case["path"])
        out = logits(model, torch.load(case["inputs"]))
        assert (out - torch.load(case["expected"])).abs().max() <= 1e-5


@pytest.mark.parametrize("name", TINY)
def test_plan_replay_gives_identical_weights(saved, name):
    for case in (c for c in saved if c["model"] == name):
        replayed, _ = fresh(name)
        apply_plan(replayed, PruningPlan.load(case["path"]))
        reference = load_pretrained(case["path"])
        ours, theirs = replayed.state_dict(), reference.state_dict()
        assert set(ours) == set(theirs)
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), key


def test_reloaded_model_can_be_pruned_again(saved, tmp_path):
    case = next(c for c in saved if c["name"] == "tiny-llama-random")
    model = load_pretrained(case["path"])
    structure = describe(model)
    masks = random_masks(structure, ("neurons", "heads"), seed=9)
    remove(model, masks, structure)
    inputs = torch.load(case["inputs"])
    expected = logits(model, inputs)
    save_pretrained(model, tmp_path / "twice")
    assert (logits(load_pretrained(tmp_path / "twice"), inputs) - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2"])
def test_generation_with_removed_attention_uses_cache_correctly(name, tmp_path):
    """Greedy generation with a KV cache equals generation without one, even when layer 0's
    attention is gone (the cache length is read from layer 0)."""
    model, structure = fresh(name)
    masks = Masks.ones(structure, ("attention",))
    masks.attention[structure.attention[0].name] = torch.tensor(0.0)
    remove(model, masks, structure)
    assert save_pretrained(model, tmp_path / "m").format == "remote-code"
    model = load_pretrained(tmp_path / "m")
    prompt = torch.randint(4, model.config.vocab_size, (1, 6), generator=torch.Generator().manual_seed(0))
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        cached = model.generate(prompt, use_cache=True, **kwargs)
        uncached = model.generate(prompt, use_cache=False, **kwargs)
        # the cache length is read from layer 0, whose attention is gone
        prefix = model(prompt[:, :-1], use_cache=True)
        assert output_cache(prefix).get_seq_length() == prompt.shape[1] - 1
        step = model(prompt[:, -1:], **cache_arguments(model, output_cache(prefix)))
        full = model(prompt)
    assert torch.equal(cached, uncached)
    assert (step.logits[:, -1] - full.logits[:, -1]).abs().max() <= 1e-4
