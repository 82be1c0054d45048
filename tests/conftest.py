"""Fixtures shared by every test folder."""
from __future__ import annotations

import contextlib
import os

import pytest
import torch


@contextlib.contextmanager
def _threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for the module (``LMPRUNE_TEST_THREADS`` to change), restored after.

    Tiny models and short sequences gain nothing from intra-op threads, and on a busy 2-core
    machine the thread hand-offs made these files 10-40x slower (measured). Opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    with _threads(int(os.environ.get("LMPRUNE_TEST_THREADS", "1"))) as count:
        yield count
