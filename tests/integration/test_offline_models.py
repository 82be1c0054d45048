"""End to end on the real offline models: prune -> save -> reload where lmprune is absent.

Every reload happens in a fresh Python process that imports only torch and transformers
(the script below checks that lmprune was never imported), so these tests prove what a user
of the saved directory gets. Models are loaded once per module; the file takes ~1 minute on
2 CPU cores.
"""
from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmprune.arch import describe
from lmprune.pruners.random import random_scores
from lmprune.pruners.selection import select
from lmprune.structures.kv_cache import cache_arguments, output_cache
from lmprune.structures import Masks, remove
from lmprune.structures.kv_cache import cache_arguments, output_cache
from lmprune.structures.export import save_pretrained
from lmprune.structures.plan import PLAN_FILE, PruningPlan, apply_plan
from lmprune.zoo import load_model

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

PROMPT = "It was a truth well known in the village that the old house"
REVIEW = "This coffee is great"
ATOL = 1e-4

# Runs in a fresh interpreter: load with stock transformers, write logits, generate.
RELOAD_SCRIPT = r'''
import json, sys
import torch
import transformers

job = json.load(open(sys.argv[1]))
cls = getattr(transformers, job["auto_class"])
kwargs = {"trust_remote_code": True} if job["trust_remote_code"] else {}
model, info = cls.from_pretrained(job["path"], output_loading_info=True, **kwargs)
model.eval()
tok = transformers.AutoTokenizer.from_pretrained(job["path"])
inputs = tok(job["text"], return_tensors="pt")
result = {"class": type(model).__name__, "module": type(model).__module__,
          "loading_info": {k: sorted(map(str, v)) for k, v in info.items()},
          "input_ids": inputs["input_ids"].tolist()}
with torch.no_grad():
    out = model(**inputs, output_hidden_states=True)
    torch.save({"logits": out.logits, "hidden": out.hidden_states[-1]}, job["tensors"])
    for name, use_cache in job.get("generate", {}).items():
        ids = model.generate(**inputs, max_new_tokens=job["max_new_tokens"], do_sample=False,
                             use_cache=use_cache)
        new = ids[0, inputs["input_ids"].shape[1]:]
        result[name] = {"ids": new.tolist(), "text": tok.decode(new, skip_special_tokens=True)}
result["lmprune_imported"] = any(m == "lmprune" or m.startswith("lmprune.") for m in sys.modules)
print("RESULT " + json.dumps(result))
'''


def reload_in_fresh_process(tmp: Path, path: Path, auto_class: str, text: str, *,
                            trust_remote_code: bool, generate: dict | None = None,
                            max_new_tokens: int = 0) -> tuple[dict, dict]:
    """Reload ``path`` in a new interpreter; returns (its report, its output tensors)."""
    job = {"path": str(path), "auto_class": auto_class, "text": text,
           "trust_remote_code": trust_remote_code, "tensors": str(tmp / "tensors.pt"),
           "generate": generate or {}, "max_new_tokens": max_new_tokens}
    (tmp / "job.json").write_text(json.dumps(job))
    (tmp / "reload.py").write_text(RELOAD_SCRIPT)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_MODULES_CACHE=str(tmp / "hf_modules"), PYTHONPATH="",
               OMP_NUM_THREADS=str(torch.get_num_threads()))
    proc = subprocess.run([sys.executable, str(tmp / "reload.py"), str(tmp / "job.json")],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    report = json.loads(line[len("RESULT "):])
    assert not report["lmprune_imported"]
    assert not any(report["loading_info"].get(k) for k in
                   ("missing_keys", "unexpected_keys", "mismatched_keys")), report["loading_info"]
    return report, torch.load(tmp / "tensors.pt")


def forward(model, tokenizer, text: str) -> dict:
    inputs = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    return {"input_ids": inputs["input_ids"].tolist(), "logits": out.logits,
            "hidden": out.hidden_states[-1]}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max())


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights once


def prompt_ids(tokenizer) -> dict:
    return tokenizer(PROMPT, return_tensors="pt")


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def uniform(smollm2, tmp_path_factory):
    """smollm2 with 20% of heads and neurons removed at random, saved (stock format)."""
    model = copy.deepcopy(smollm2.model)
    structure = describe(model)
    masks = select(structure, random_scores(structure, seed=0), 0.2, ["heads", "neurons"])
    plan = PruningPlan.from_masks(structure, masks, {"method": "random", "sparsity": 0.2})
    remove(model, masks, structure)
    path = tmp_path_factory.mktemp("uniform") / "smollm2-random20"
    saved = save_pretrained(model, path, tokenizer=smollm2.tokenizer, plan=plan)
    return {"model": model, "structure": structure, "masks": masks, "plan": plan,
            "saved": saved, "path": path}


@pytest.fixture(scope="module")
def heterogeneous(smollm2, tmp_path_factory):
    """Attention of layers 3 and 7 removed, per-layer neuron counts, per-layer kv heads."""
    model = copy.deepcopy(smollm2.model)
    structure = describe(model)
    scores = random_scores(structure, seed=1)
    masks = Masks()
    masks.attention["layers.3.attn"] = torch.zeros(())
    masks.attention["layers.7.attn"] = torch.zeros(())
    masks.kv_groups["layers.10.attn"] = torch.tensor([1.0, 0.0, 1.0])  # 3 -> 2 kv heads
    masks.heads["layers.12.attn"] = torch.tensor([1.0, 1.0, 0.0] * 3)  # 9 -> 6 query heads
    for i, site in enumerate(structure.ffn):
        keep = site.width - 64 * (i % 5 + 1)
        mask = torch.zeros(site.width)
        mask[torch.topk(scores.neurons[site.name], keep).indices] = 1.0
        masks.neurons[site.name] = mask
    remove(model, masks, structure)
    path = tmp_path_factory.mktemp("hetero") / "smollm2-hetero"
    saved = save_pretrained(model, path, tokenizer=smollm2.tokenizer)
    return {"model": model, "saved": saved, "path": path}


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    loaded = load_model("minilm-l6", "sequence-classification", num_labels=2)
    model = loaded.model
    structure = describe(model)
    masks = select(structure, random_scores(structure, seed=0), 0.3, ["heads", "neurons"])
    remove(model, masks, structure)
    path = tmp_path_factory.mktemp("minilm") / "minilm-random30"
    saved = save_pretrained(model, path, tokenizer=loaded.tokenizer)
    return {"model": model, "tokenizer": loaded.tokenizer, "structure": describe(model),
            "saved": saved, "path": path}


@pytest.fixture(scope="module")
def austen_paragraphs() -> list[str]:
    from lmprune.data import load_dataset

    texts = load_dataset("austen", split="test")["text"]
    return [t for t in texts if len(t) >= 200][:5]


# --------------------------------------------------------------------------- uniform

def test_uniform_saves_stock_format_with_plan(uniform):
    path = uniform["path"]
    assert uniform["saved"].format == "stock"
    config = json.loads((path / "config.json").read_text())
    assert "auto_map" not in config and "lmprune_structure" not in config
    assert not (path / "lmprune_pruned.py").exists()
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (6, 3)
    assert config["intermediate_size"] == 1216  # 0.8 x 1536 rounded to a multiple of 32
    assert (path / PLAN_FILE).exists() and (path / "tokenizer.json").exists()
    assert PruningPlan.load(path).to_dict() == uniform["plan"].to_dict()


def test_uniform_plan_replays_on_dense(smollm2, uniform):
    replayed = apply_plan(copy.deepcopy(smollm2.model), PruningPlan.load(uniform["path"]))
    a = forward(replayed, smollm2.tokenizer, PROMPT)["logits"]
    b = forward(uniform["model"], smollm2.tokenizer, PROMPT)["logits"]
    assert max_diff(a, b) == 0.0


def test_uniform_parameter_count(smollm2, uniform):
    structure, masks = uniform["structure"], uniform["masks"]
    config = smollm2.model.config
    assert not config.attention_bias and not config.mlp_bias  # no biases in the formula below
    hidden, expected = structure.hidden.size, 0
    for site in structure.attention:  # a query head: its q rows and o columns (kv groups stay)
        assert int(masks.kv_groups.get(site.name, torch.ones(site.num_kv_heads)).sum()) == site.num_kv_heads
        removed = site.num_heads - int(masks.heads[site.name].sum())
        expected += removed * site.head_dim * 2 * hidden
    for site in structure.ffn:  # a neuron: its gate and up rows, its down column
        removed = site.width - int(masks.neurons[site.name].sum())
        expected += removed * (len(site.ins) + 1) * hidden
    dense, pruned = n_params(smollm2.model), n_params(uniform["model"])
    assert dense - pruned == expected
    # 3 of 9 heads and 307 of 1536 neurons per layer go: ~17% of the model, ~22% of the body
    assert 0.15 < expected / dense < 0.19


def test_uniform_reloads_with_stock_transformers(smollm2, uniform, tmp_path):
    report, tensors = reload_in_fresh_process(
        tmp_path, uniform["path"], "AutoModelForCausalLM", PROMPT, trust_remote_code=False,
        generate={"greedy": True}, max_new_tokens=12)
    assert (report["class"], report["module"]) == (
        "LlamaForCausalLM", "transformers.models.llama.modeling_llama")
    expected = forward(uniform["model"], smollm2.tokenizer, PROMPT)
    assert report["input_ids"] == expected["input_ids"]
    assert max_diff(tensors["logits"], expected["logits"]) <= ATOL
    greedy = report["greedy"]
    assert len(greedy["ids"]) == 12 and greedy["text"].strip()


# --------------------------------------------------------------------------- heterogeneous

def test_heterogeneous_saves_remote_code(heterogeneous):
    path = heterogeneous["path"]
    assert heterogeneous["saved"].format == "remote-code"
    config = json.loads((path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"].startswith("lmprune_pruned.")
    skips = config["lmprune_structure"]["skips"]
    assert {"model.layers.3.self_attn", "model.layers.7.self_attn"} <= set(skips)
    assert (path / "lmprune_pruned.py").exists()


def test_heterogeneous_reloads_with_remote_code_and_kv_cache(smollm2, heterogeneous, tmp_path):
    report, tensors = reload_in_fresh_process(
        tmp_path, heterogeneous["path"], "AutoModelForCausalLM", PROMPT, trust_remote_code=True,
        generate={"cached": True, "uncached": False}, max_new_tokens=8)
    assert report["class"] == "PrunedLlamaForCausalLM"
    expected = forward(heterogeneous["model"], smollm2.tokenizer, PROMPT)
    assert max_diff(tensors["logits"], expected["logits"]) <= ATOL
    cached, uncached = report["cached"], report["uncached"]
    assert len(cached["ids"]) == 8 and cached["text"].strip()
    assert cached["ids"] == uncached["ids"]  # the removed attention layers keep the cache right


def generate_both(model, inputs, new_tokens: int = 8):
    with torch.no_grad():
        cached = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)
        uncached = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False,
                                  use_cache=False)
    return cached, uncached


def padded_batch(tokenizer) -> dict:
    tokenizer = copy.copy(tokenizer)
    tokenizer.padding_side = "left"
    return tokenizer([PROMPT, "Anne said"], return_tensors="pt", padding=True)


def test_heterogeneous_padded_batch_cache_matches_no_cache(smollm2, heterogeneous):
    cached, uncached = generate_both(heterogeneous["model"], padded_batch(smollm2.tokenizer))
    assert torch.equal(cached, uncached)


def test_removed_first_attention_keeps_cache_length(smollm2):
    model = copy.deepcopy(smollm2.model)
    masks = Masks()
    masks.attention["layers.0.attn"] = torch.zeros(())
    remove(model, masks)
    ids = prompt_ids(smollm2.tokenizer)["input_ids"]
    with torch.no_grad():
        prefix = model(ids[:, :-1], use_cache=True)
        assert output_cache(prefix).get_seq_length() == ids.shape[1] - 1
        step = model(ids[:, -1:], **cache_arguments(model, output_cache(prefix)))
        full = model(ids)
    assert max_diff(step.logits[:, -1], full.logits[:, -1]) < 1e-2
    cached, uncached = generate_both(model, padded_batch(smollm2.tokenizer))
    assert torch.equal(cached, uncached)


# --------------------------------------------------------------------------- minilm

def test_minilm_classifier_reloads_identically(minilm, tmp_path):
    structure = minilm["structure"]
    assert {s.num_heads for s in structure.attention} == {8}  # 12 -> 8
    assert {s.width for s in structure.ffn} == {1088}  # 0.7 x 1536 = 1075, aligned to 32
    assert minilm["saved"].format == "remote-code"
    report, tensors = reload_in_fresh_process(
        tmp_path, minilm["path"], "AutoModelForSequenceClassification", REVIEW,
        trust_remote_code=True)
    assert report["class"] == "PrunedBertForSequenceClassification"
    expected = forward(minilm["model"], minilm["tokenizer"], REVIEW)
    assert report["input_ids"] == expected["input_ids"]
    assert tensors["logits"].shape == (1, 2)
    assert max_diff(tensors["logits"], expected["logits"]) <= ATOL
    assert max_diff(tensors["hidden"], expected["hidden"]) <= ATOL


# --------------------------------------------------------------------------- lm-eval HFLM

def test_hflm_rolling_perplexity(smollm2, uniform, heterogeneous, austen_paragraphs):
    from lmprune.evaluation import make_hflm, rolling_perplexity

    texts = austen_paragraphs
    assert len(texts) == 5
    dense = rolling_perplexity(make_hflm(smollm2.model, smollm2.tokenizer, max_length=512), texts)
    pruned_lm = make_hflm(str(uniform["path"]), max_length=512)
    assert type(pruned_lm.model).__name__ == "LlamaForCausalLM"
    pruned = rolling_perplexity(pruned_lm, texts)
    hetero_lm = make_hflm(heterogeneous["path"], max_length=512)  # remote code, detected
    assert type(hetero_lm.model).__name__ == "PrunedLlamaForCausalLM"
    hetero = rolling_perplexity(hetero_lm, texts[:1])
    for result in (dense, pruned, hetero):
        for key in ("word_perplexity", "token_perplexity"):
            assert math.isfinite(result[key]) and result[key] > 1.0, (key, result)
        assert 0 < result["bits_per_byte"] < 10
        assert "loglikelihood_rolling" in result["protocol"] and "max_length=512" in result["protocol"]
    assert dense["documents"] == pruned["documents"] == 5 and hetero["documents"] == 1
    assert dense["tokens"] == pruned["tokens"] > 500
    # the dense model on English prose: low perplexity, a sanity check on the bridge itself
    assert dense["token_perplexity"] < 100
