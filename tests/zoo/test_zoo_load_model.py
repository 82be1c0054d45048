"""``load_model`` errors, local directories and hub ids (never touching the network)."""
from __future__ import annotations

import pytest
import torch

from lmprune.errors import LmpruneError, UnknownNameError
from lmprune.zoo import (
    DEFAULT_TASKS,
    FAMILY_TASKS,
    build_tiny,
    list_models,
    load_model,
    resolve_model_dir,
)
from lmprune.zoo import hub as hub_module


def test_list_models_is_consistent() -> None:
    infos = list_models()
    names = [i.name for i in infos]
    assert len(names) == len(set(names))
    assert {"minilm-l6", "smollm2-135m", "tiny-bert", "tiny-llama"} <= set(names)
    for info in infos:
        assert info.offline
        assert info.default_task == DEFAULT_TASKS[info.family]
        assert info.default_task in FAMILY_TASKS[info.family]


def test_unknown_alias_lists_aliases_and_mentions_network() -> None:
    with pytest.raises(UnknownNameError) as err:
        load_model("tiny-lama")
    msg = str(err.value)
    assert "tiny-llama" in msg and "smollm2-135m" in msg and "network" in msg
    assert "Did you mean 'tiny-llama'" in msg


def test_wrong_task_names_valid_tasks() -> None:
    with pytest.raises(LmpruneError, match="base, seq2seq-lm"):
        load_model("tiny-t5", "sequence-classification")
    with pytest.raises(LmpruneError, match="Valid tasks"):
        load_model("tiny-bert", "causal-lm")
    with pytest.raises(LmpruneError, match="Valid tasks"):
        load_model("tiny-bert", "classification")


def test_offline_hub_id_fails_fast_with_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_module, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(LmpruneError) as err:
        load_model("lmprune-tests/does-not-exist")
    msg = str(err.value)
    assert "network access" in msg and "tiny-bert" in msg and "minilm-l6" in msg


def test_hub_id_shape() -> None:
    assert hub_module.looks_like_hub_id("HuggingFaceTB/SmolLM2-135M")
    for not_hub in ("tiny", "./a/b", "/abs/dir", "a/b/c"):
        assert not hub_module.looks_like_hub_id(not_hub)


@pytest.mark.parametrize(("name", "task"), [("tiny-llama", "causal-lm"),
                                            ("tiny-bert", "sequence-classification"),
                                            ("tiny-t5", "seq2seq-lm"),
                                            ("tiny-t5-gated", "seq2seq-lm")])
def test_local_directory_round_trip(tmp_path, name: str, task: str) -> None:
    original = load_model(name, task, num_labels=3)
    original.model.save_pretrained(tmp_path)
    original.tokenizer.save_pretrained(tmp_path)

    loaded = load_model(str(tmp_path))  # task inferred from the config's model_type
    assert loaded.task == task and loaded.path == str(tmp_path)
    assert type(loaded.model) is type(original.model)
    batch = dict(loaded.tokenizer(["some text", "more"], padding=True, return_tensors="pt"))
    assert batch["input_ids"].tolist() == original.tokenizer(
        ["some text", "more"], padding=True, return_tensors="pt")["input_ids"].tolist()
    if task == "seq2seq-lm":
        batch["decoder_input_ids"] = torch.zeros(2, 1, dtype=torch.long)
    with torch.no_grad():
        assert torch.equal(loaded.model(**batch).logits, original.model(**batch).logits)
    if task != "sequence-classification":
        out_emb, in_emb = loaded.model.get_output_embeddings(), loaded.model.get_input_embeddings()
        assert (out_emb.weight is in_emb.weight) == (name == "tiny-t5")


def test_saved_classifier_keeps_or_replaces_its_labels(tmp_path) -> None:
    build_tiny("tiny-bert", "sequence-classification", num_labels=3).save_pretrained(tmp_path)
    assert load_model(str(tmp_path)).model.config.num_labels == 3
    fresh = load_model(str(tmp_path), num_labels=5).model
    assert fresh.classifier.out_features == 5


def test_local_directory_wrong_task_and_base(tmp_path) -> None:
    build_tiny("tiny-qwen2", "causal-lm").save_pretrained(tmp_path)
    with pytest.raises(LmpruneError, match="Valid tasks"):
        load_model(str(tmp_path), "seq2seq-lm")
    base = load_model(str(tmp_path), "base")
    assert type(base.model).__name__ == "Qwen2Model"
    assert base.tokenizer is None  # none was saved


def test_directory_without_config(tmp_path) -> None:
    with pytest.raises(LmpruneError, match="not a loadable"):
        load_model(str(tmp_path))


def test_resolve_model_dir_errors(tmp_path) -> None:
    with pytest.raises(LmpruneError, match="save_pretrained"):
        resolve_model_dir("tiny-bert")
    with pytest.raises(UnknownNameError):
        resolve_model_dir("no-such-model")
    assert resolve_model_dir(str(tmp_path)) == str(tmp_path.resolve())
