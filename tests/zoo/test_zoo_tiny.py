"""Tiny aliases: built offline, deterministic, runnable for every task they claim."""
from __future__ import annotations

import pytest
import torch

from lmprune.zoo import FAMILY_TASKS, build_tiny, build_tiny_tokenizer, list_models, load_model

FAMILY = {info.name: info.family for info in list_models()}
TINY_ALIASES = [name for name in FAMILY if name.startswith("tiny-")]
CASES = [(name, task) for name in TINY_ALIASES for task in FAMILY_TASKS[FAMILY[name]]]
TEXTS = ["Hello, world!", "A longer line\twith a tab\nand a newline."]


def _inputs(name: str, task: str) -> dict[str, torch.Tensor]:
    tok = build_tiny_tokenizer(name)
    batch = dict(tok(TEXTS, padding=True, return_tensors="pt"))
    if FAMILY[name] == "t5":
        target = tok(["yes", "no"], padding=True, return_tensors="pt").input_ids
        if task == "seq2seq-lm":
            batch["labels"] = target
        else:
            batch["decoder_input_ids"] = target
    elif task == "causal-lm":
        batch["labels"] = batch["input_ids"]
    return batch


def test_tiny_aliases_are_listed() -> None:
    assert {"tiny-bert", "tiny-roberta", "tiny-t5", "tiny-t5-gated", "tiny-llama",
            "tiny-qwen2", "tiny-mistral"} <= set(TINY_ALIASES)


@pytest.mark.parametrize(("name", "task"), CASES)
def test_forward_every_task(name: str, task: str) -> None:
    model = build_tiny(name, task)
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with torch.no_grad():
        out = model(**_inputs(name, task))
    if task == "sequence-classification":
        assert out.logits.shape == (2, 2)
    elif task == "question-answering":
        assert out.start_logits.shape == out.end_logits.shape
    elif task in ("causal-lm", "seq2seq-lm"):
        assert out.logits.shape[-1] == model.config.vocab_size
        assert torch.isfinite(out.loss)
    else:
        assert out.last_hidden_state.shape[-1] == model.config.hidden_size
    assert torch.isfinite(next(v for v in out.values() if isinstance(v, torch.Tensor))).all()


@pytest.mark.parametrize("name", TINY_ALIASES)
def test_deterministic_for_a_seed(name: str) -> None:
    a, b, c = build_tiny(name, seed=3), build_tiny(name, seed=3), build_tiny(name, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_build_does_not_touch_the_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny("tiny-llama")
    assert torch.equal(torch.rand(3), expected)


def test_num_labels() -> None:
    model = build_tiny("tiny-roberta", "sequence-classification", num_labels=5)
    ids = build_tiny_tokenizer("tiny-roberta")(TEXTS, padding=True, return_tensors="pt")
    assert model(**ids).logits.shape == (2, 5)


@pytest.mark.parametrize("name", TINY_ALIASES)
def test_tokenizer_round_trips_and_matches_config(name: str) -> None:
    tok = build_tiny_tokenizer(name)
    config = build_tiny(name).config
    text = "The quick brown fox, 42 times!\n\t(ok)  "
    ids = tok(text)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert max(ids) < config.vocab_size
    assert tok.pad_token_id == config.pad_token_id
    if FAMILY[name] in ("llama", "qwen2", "mistral"):
        assert ids[0] == tok.bos_token_id == config.bos_token_id
        assert tok.eos_token_id == config.eos_token_id
    if FAMILY[name] == "t5":
        assert ids[-1] == tok.eos_token_id == config.eos_token_id
        assert config.decoder_start_token_id == tok.pad_token_id
    assert tok.decode(tok("é")["input_ids"], skip_special_tokens=False).count(tok.unk_token) == 1


def test_bert_tokenizer_gives_segments() -> None:
    out = build_tiny_tokenizer("tiny-bert")("ab", "cd")
    assert out["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]


def test_load_model_tiny_defaults() -> None:
    loaded = load_model("tiny-t5-gated")
    assert loaded.task == "seq2seq-lm" and loaded.path is None and loaded.name == "tiny-t5-gated"
    # transformers 5 keeps T5Config.tie_word_embeddings True; check the tensors instead.
    gated = loaded.model
    assert gated.lm_head.weight is not gated.shared.weight
    assert not gated.config.scale_decoder_outputs
    t5 = load_model("tiny-t5").model
    assert t5.lm_head.weight is t5.shared.weight and t5.config.scale_decoder_outputs
    assert load_model("tiny-mistral").task == "causal-lm"
    half = load_model("tiny-llama", dtype=torch.bfloat16)
    assert next(half.model.parameters()).dtype == torch.bfloat16
