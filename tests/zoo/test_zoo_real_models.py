"""The real offline models (slow: they load real weights, but need no network)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmprune.zoo import cache, load_model

pytestmark = pytest.mark.slow


def test_minilm_sequence_classification() -> None:
    loaded = load_model("minilm-l6", num_labels=2)
    assert loaded.task == "sequence-classification"
    config = loaded.model.config
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("bert", 6, 384)
    texts = ["a great snack", "stale and bland"]
    batch = loaded.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert loaded.model(**batch).logits.shape == (2, 2)


def test_minilm_head_is_seeded() -> None:
    a = load_model("minilm-l6", "question-answering", seed=1).model.qa_outputs.weight
    b = load_model("minilm-l6", "question-answering", seed=1).model.qa_outputs.weight
    assert torch.equal(a, b)


def test_smollm2_structure(smollm2_path: str) -> None:
    loaded = load_model("smollm2-135m")
    assert loaded.path == smollm2_path and loaded.task == "causal-lm"
    assert cache.read_marker(Path(smollm2_path)) is not None
    config = loaded.model.config
    assert (config.num_hidden_layers, config.hidden_size) == (30, 576)
    assert config.intermediate_size == 1536
    assert (config.num_attention_heads, config.num_key_value_heads) == (9, 3)
    assert config.tie_word_embeddings and not hasattr(config, "quantization_config")
    model = loaded.model
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert next(model.parameters()).dtype == torch.float32


def test_smollm2_generates_english(smollm2_path: str) -> None:
    loaded = load_model("smollm2-135m")
    tok = loaded.tokenizer
    prompt = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = loaded.model.generate(**prompt, max_new_tokens=10, do_sample=False)
    text = tok.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text.strip()
    assert "Paris" in text  # a wrong dequantization would not know this
