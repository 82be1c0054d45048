"""Zero-shot tasks whose answers do not fit the model's context fail early with a clear error
(lm-eval would stop on a bare assertion in the middle of scoring)."""
from __future__ import annotations

import pytest

from lmprune.errors import LmpruneError
from lmprune.evaluation.zeroshot import check_answer_lengths
from lmprune.zoo import build_tiny_tokenizer


def test_answers_longer_than_the_context_are_refused_before_scoring():
    tokenizer = build_tiny_tokenizer("tiny-llama")  # about a token per character
    with pytest.raises(LmpruneError, match=r"'wordnet-defs' has answer choices of up to \d+ "
                                           r"tokens.*context of 16 tokens.*eval.zero_shot=\[\]"):
        check_answer_lengths(tokenizer, ["wordnet-defs"], 16)
    check_answer_lengths(tokenizer, ["wordnet-defs"], 100_000)  # fits: no error
    check_answer_lengths(tokenizer, [], 1)  # no offline task: nothing to check


def test_only_the_questions_lm_eval_scores_are_checked():
    from lmprune.data import load_dataset

    tokenizer = build_tiny_tokenizer("tiny-llama")
    first = load_dataset("wordnet-defs", split="test")[:1]["choices"][0]
    longest = max(len(tokenizer(" " + c, add_special_tokens=False)["input_ids"]) for c in first)
    check_answer_lengths(tokenizer, ["wordnet-defs"], longest, limit=1)
    with pytest.raises(LmpruneError, match=f"up to {longest} tokens"):
        check_answer_lengths(tokenizer, ["wordnet-defs"], longest - 1, limit=1)


def test_the_cli_says_so_for_a_short_context_model(tmp_path, capsys):
    from lmprune.cli.main import main

    code = main(["prune", "--method", "magnitude", "--model", "tiny-llama", "--sparsity", "0.2",
                 "--out", str(tmp_path / "out"), "eval.max_windows=2", "eval.speed=false"])
    assert code == 2
    assert "error: zero-shot task 'wordnet-defs' has answer choices" in capsys.readouterr().err
