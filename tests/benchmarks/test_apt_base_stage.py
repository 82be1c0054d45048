"""benchmarks/apt_base/stage.py: files cut into parts of a byte limit and joined back."""
from __future__ import annotations

import shutil

from bench_scripts import load

stage = load("apt_base/stage.py")


def _files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    sizes = {"config.json": 10, "model.safetensors": 2500, "tokenizer.json": 700}
    for i, (name, size) in enumerate(sizes.items()):
        (src / name).write_bytes(bytes((i * 7 + k) % 251 for k in range(size)))
    return src, sorted(src.iterdir())


def _carry(parts, staged, skip=()):
    staged.mkdir(exist_ok=True)
    for part in parts:
        if part.name not in skip:
            shutil.copytree(part, staged, dirs_exist_ok=True)


def test_parts_respect_the_limit_and_join_back(tmp_path):
    src, files = _files(tmp_path)
    parts = stage.pack(files, tmp_path / "out", {"model": "x"}, part_bytes=1000)
    # 3,210 bytes in parts of at most 1,000 (the manifest rides in part0 on top)
    assert [p.name for p in parts] == ["part0", "part1", "part2", "part3"]
    for part in parts:
        assert sum(f.stat().st_size for f in part.iterdir()
                   if f.name != stage.MANIFEST) <= 1000
    staged, target = tmp_path / "staged", tmp_path / "model"
    _carry(parts, staged, skip={"part2"})
    assert stage.assemble(staged, target) == 3 and not target.exists()
    _carry(parts, staged)
    assert stage.assemble(staged, target) == 0
    for f in files:
        assert (target / f.name).read_bytes() == f.read_bytes()
    assert stage.assemble(staged, target) == 0  # assembled before: nothing to do


def test_a_corrupt_piece_is_named_and_nothing_is_assembled(tmp_path, capsys):
    _, files = _files(tmp_path)
    parts = stage.pack(files, tmp_path / "out", {}, part_bytes=1000)
    staged, target = tmp_path / "staged", tmp_path / "model"
    _carry(parts, staged)
    piece = staged / "model.safetensors.piece1"
    data = bytearray(piece.read_bytes())
    data[0] ^= 1
    piece.write_bytes(bytes(data))
    assert stage.assemble(staged, target) == 3
    assert "corrupt files in part0, part1, part2" in capsys.readouterr().out
    assert not (target / stage.DONE).exists()
