"""Fixtures for the zoo tests.

The SmolLM2 conversion (~35 s) happens once per cache: the session fixture uses
``$LMPRUNE_CACHE`` if set, else the default ``~/.cache/lmprune``, so later runs reuse it.
"""
from __future__ import annotations

import pytest

from lmprune.zoo import resolve_model_dir


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    return resolve_model_dir("smollm2-135m")
