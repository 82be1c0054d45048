"""How mpnet-base travels to the GPU machine: benchmarks/device/stage.py's chunks (packed by
benchmarks/apt_base/stage.py), received over several calls and unpacked when complete."""
from __future__ import annotations

import json
import shutil

import pytest

from bench_scripts import load

apt_stage = load("apt_base/stage.py")


@pytest.fixture
def packed(tmp_path, monkeypatch):
    """A 2.5 MiB model directory packed as the asset "mpnet" in 1 MiB chunks under
    ``tmp_path/.stage`` (the working directory is ``tmp_path``, as the repository root)."""
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "src" / "mpnet-base"
    src.mkdir(parents=True)
    (src / "config.json").write_text(json.dumps({"model_type": "mpnet"}))
    (src / "model.safetensors").write_bytes(bytes(k % 251 for k in range(5 << 19)))
    packer = apt_stage.device_stage()
    folders = packer.pack("mpnet", [f"{src}=mpnet-base"], chunk_mib=1)
    return packer, src, folders


def _carry(folders, keep):
    """What one call carries: only the ``keep`` chunk folders are in .stage."""
    for folder in folders:
        if folder.name not in keep and folder.exists():
            shutil.rmtree(folder)


def test_chunks_received_over_calls_unpack_once_complete(packed, tmp_path):
    packer, src, folders = packed
    assert [f.name for f in folders] == ["mpnet.0", "mpnet.1", "mpnet.2"]
    assert all(sum(p.stat().st_size for p in f.glob("*.chunk")) <= 1 << 20 for f in folders)
    saved = {f.name: tmp_path / "saved" / f.name for f in folders}
    for f in folders:
        shutil.copytree(f, saved[f.name])
    device = tmp_path / "device"
    _carry(folders, {"mpnet.0", "mpnet.2"})
    packer.receive(device)
    assert not (device / "assets" / "mpnet.ready").exists()
    shutil.copytree(saved["mpnet.1"], tmp_path / ".stage" / "mpnet.1")
    packer.receive(device)
    out = device / "assets" / "mpnet" / "mpnet-base"
    assert (device / "assets" / "mpnet.ready").exists()
    for f in src.iterdir():
        assert (out / f.name).read_bytes() == f.read_bytes()


def test_a_corrupt_chunk_is_refused(packed, tmp_path):
    packer, _, folders = packed
    chunk = folders[1] / "mpnet.1.chunk"
    data = bytearray(chunk.read_bytes())
    data[0] ^= 1
    chunk.write_bytes(bytes(data))
    device = tmp_path / "device"
    with pytest.raises(SystemExit, match="sha256 mismatch"):
        packer.receive(device)
    assert not (device / "assets" / "mpnet.ready").exists()
