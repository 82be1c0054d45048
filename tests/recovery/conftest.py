"""Fixtures of the recovery tests: the char tokenizer and a pruned tiny-llama on disk."""
from __future__ import annotations

import pytest
from recovery_helpers import pruned_tiny

from lmprune.structures.export import save_pretrained
from lmprune.zoo import build_tiny_tokenizer


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every recovery test runs on one intra-op thread (see tests/conftest.py)."""
    yield


@pytest.fixture(scope="session")
def tokenizer():
    return build_tiny_tokenizer("tiny-llama")


@pytest.fixture(scope="session")
def pruned_dir(tmp_path_factory, tokenizer):
    """A pruned tiny-llama saved with tokenizer and plan; its removed attention sublayer makes
    it a remote-code checkpoint."""
    model, plan = pruned_tiny()
    path = tmp_path_factory.mktemp("pruned") / "model"
    assert save_pretrained(model, path, tokenizer=tokenizer, plan=plan).format == "remote-code"
    return path
