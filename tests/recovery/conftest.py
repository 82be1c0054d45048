"""Fixtures of the recovery tests: the char tokenizer and a pruned tiny-llama on disk."""
from __future__ import annotations

import pytest
import torch
from recovery_helpers import pruned_tiny

from lmprune.structures.export import save_pretrained
from lmprune.zoo import build_tiny_tokenizer


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matmuls are fastest on one thread (and the CI box has two cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
