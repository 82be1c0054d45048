"""Prompt formatting, tokenization and label masking against hand-made examples."""
from __future__ import annotations

import json

import pytest
import torch

from lmprune.errors import LmpruneError
from lmprune.recovery.instruct_data import (
    IGNORE_INDEX,
    InstructionDataError,
    build_examples,
    collate,
    format_prompt,
    load_instruction_data,
    tokenize_example,
)

BOS, EOS = 1, 2  # the tiny decoder tokenizer's <s> and </s>


def char_ids(text: str) -> list[int]:
    """The char tokenizer by hand: 4 special tokens, then ASCII 32..126, then \\n and \\t."""
    table = {"\n": 99, "\t": 100}
    return [table.get(c, 4 + ord(c) - 32) for c in text]


def test_alpaca_prompt_is_llm_pruners():
    assert format_prompt("Add 2 and 3.") == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nAdd 2 and 3.\n\n### Response:\n")
    assert format_prompt("Translate", "bonjour") == (
        "Below is an instruction that describes a task, paired with an input that provides "
        "further context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nTranslate\n\n### Input:\nbonjour\n\n### Response:\n")


def test_plain_prompt_is_llm_pruners_zero_prompter():
    assert format_prompt("Name a color.", "", "plain") == "Name a color:"
    assert format_prompt("Translate", "bonjour", "plain") == "Translate: bonjour."
    assert format_prompt("Why?", "It is late!", "plain") == "Why? It is late!"
    with pytest.raises(LmpruneError, match="unknown prompt template"):
        format_prompt("x", "", "chatml")


def test_labels_mask_the_prompt_and_keep_the_response_and_eos(tokenizer):
    prompt = format_prompt("Add 2 and 3.")
    ex = tokenize_example(tokenizer, "Add 2 and 3.", "", "5", max_len=512)
    assert ex.input_ids == [BOS] + char_ids(prompt) + char_ids("5") + [EOS]
    assert ex.labels == [IGNORE_INDEX] * (1 + len(prompt)) + char_ids("5") + [EOS]
    assert ex.num_targets == 2  # "5" and </s>


def test_plain_template_labels_the_space_before_the_response(tokenizer):
    ex = tokenize_example(tokenizer, "Count", "to two", "1 2", max_len=512, template="plain")
    prompt = "Count: to two."
    assert ex.input_ids == [BOS] + char_ids(prompt + " 1 2") + [EOS]
    assert ex.labels == [IGNORE_INDEX] * (1 + len(prompt)) + char_ids(" 1 2") + [EOS]


def test_train_on_inputs_labels_everything(tokenizer):
    ex = tokenize_example(tokenizer, "Hi", "", "yo", max_len=512, template="plain",
                          train_on_inputs=True)
    assert ex.labels == ex.input_ids == [BOS] + char_ids("Hi: yo") + [EOS]


def test_truncation_keeps_the_first_tokens_and_drops_eos(tokenizer):
    ex = tokenize_example(tokenizer, "Hi", "", "abcdef", max_len=8, template="plain")
    assert ex.input_ids == [BOS] + char_ids("Hi: abc")  # 8 tokens, no room for </s>
    assert ex.labels == [IGNORE_INDEX] * 4 + char_ids(" abc")


def test_slow_tokenizer_fallback_agrees_with_offsets(tokenizer):
    class Slow:  # no offsets: LLM-Pruner's rule, len(tokenize(prompt)) tokens are the prompt
        is_fast = False
        eos_token_id = tokenizer.eos_token_id

        def __call__(self, text, **kwargs):
            return tokenizer(text)

    for template in ("alpaca", "plain"):
        fast = tokenize_example(tokenizer, "Count", "to 3", "1 2 3", max_len=300, template=template)
        slow = tokenize_example(Slow(), "Count", "to 3", "1 2 3", max_len=300, template=template)
        assert fast == slow


def test_examples_without_targets_are_dropped_and_counted(tokenizer):
    rows = [{"instruction": "a" * 40, "input": "", "output": "b"},
            {"instruction": "c", "input": "", "output": "d"}]
    examples, dropped = build_examples(tokenizer, rows, max_len=20, template="plain")
    assert dropped == 1 and len(examples) == 1
    with pytest.raises(InstructionDataError, match="raise recovery.max_len"):
        build_examples(tokenizer, rows[:1], max_len=20, template="plain")


def test_missing_columns_are_named(tokenizer, tmp_path):
    with pytest.raises(InstructionDataError, match="no column 'output'.*instruction, response"):
        build_examples(tokenizer, [{"instruction": "a", "response": "b"}], max_len=64)
    examples, _ = build_examples(tokenizer, [{"instruction": "a", "output": "b"}], max_len=64,
                                 template="plain")
    assert len(examples) == 1  # "input" is optional
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    with pytest.raises(InstructionDataError, match="file .*no column 'instruction', 'output'"):
        load_instruction_data(str(bad))
    with pytest.raises(InstructionDataError, match="holds text data, not instructions"):
        load_instruction_data("austen")


def test_local_file_and_bundled_data_load(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n")
    assert load_instruction_data(str(good))[0] == {"instruction": "a", "output": "b"}
    assert set(load_instruction_data("chat-pairs").column_names) == {"instruction", "input",
                                                                      "output"}


def test_collate_pads_right_to_a_multiple_of_8(tokenizer):
    a = tokenize_example(tokenizer, "Hi", "", "yo", max_len=64, template="plain")  # 8 tokens
    b = tokenize_example(tokenizer, "Hello", "", "you", max_len=64, template="plain")  # 12
    batch = collate([a, b], pad_id=3)
    assert batch["input_ids"].shape == (2, 16)
    assert batch["input_ids"][0].tolist() == a.input_ids + [3] * 8
    assert batch["labels"][0].tolist() == a.labels + [IGNORE_INDEX] * 8
    assert batch["attention_mask"].sum(1).tolist() == [8, 12]
    assert batch["attention_mask"].dtype == torch.long
