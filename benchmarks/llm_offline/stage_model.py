"""Carry an offline HF model to the GPU machine in parts of <= 36 MiB, losslessly.

The GPU machine has no internet and a call carries at most 64 MiB, so the model travels in
parts over consecutive calls. smollm2-135m's cached weights are fp32 (538 MB) but come from a
GGUF file (Q4_1 matrices, Q8_0 embeddings): every 32-value block of a matrix is exactly
``d * q + m`` (Q4_1: fp16 ``d``, ``m``, 4-bit ``q``) or ``d * q`` (Q8_0: fp16 ``d``, int8 ``q``).
``pack`` recovers ``d``, ``m`` and ``q`` per block and keeps a tensor in that form only when
decoding it gives back the *identical* fp32 tensor (checked); any other tensor is stored as
it is. So the staged model is bit-identical to the cached one, in ~97 MB (three parts) where
bf16 would need 269 MB and still change the weights.

Here (the machine with the model cache), in the repository root::

    python benchmarks/llm_offline/stage_model.py pack smollm2-135m .stage/smollm2

writes ``.stage/smollm2/part0`` ... (``.stage/`` is git-ignored); on the GPU machine, one call
per part, each carrying its part folder::

    python3 benchmarks/llm_offline/stage_model.py unpack .stage/smollm2/partK ~/stage/smollm2

``unpack`` keeps each part under ``~/stage/smollm2`` (the home folder survives between calls
while the machine stays warm) and, once all parts are there, checks the SHA-256 and writes a
plain HF directory ``~/stage/smollm2/model`` (fp32 safetensors + config + tokenizer) that
``--model`` accepts.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import sys
from pathlib import Path

import torch

BLOCK = 32
SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json",
              "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


# ----------------------------------------------------------------------------- codecs

def _blocks(t: torch.Tensor) -> torch.Tensor | None:
    if t.dtype != torch.float32 or t.numel() % BLOCK or t.dim() != 2 or t.shape[-1] % BLOCK:
        return None
    return t.reshape(-1, BLOCK)


def encode_q4_1(t: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """(codes, d, m) with ``t == d * q + m`` exactly per block, or None."""
    b = _blocks(t)
    if b is None:
        return None
    m = b.min(1).values
    d = ((b.max(1).values - m) / 15).half().float()
    safe = torch.where(d == 0, torch.ones_like(d), d)
    q = ((b - m[:, None]) / safe[:, None]).round().clamp(0, 15)
    if not torch.equal(d[:, None] * q + m[:, None], b) or not torch.equal(m.half().float(), m):
        return None
    q = q.to(torch.uint8).reshape(-1, 2)
    return {"codes": q[:, 0] | (q[:, 1] << 4), "d": d.half(), "m": m.half()}


def decode_q4_1(parts: dict[str, torch.Tensor], shape) -> torch.Tensor:
    codes = parts["codes"]
    q = torch.stack([codes & 15, codes >> 4], 1).reshape(-1, BLOCK).float()
    return (parts["d"].float()[:, None] * q + parts["m"].float()[:, None]).reshape(shape)


def encode_q8_0(t: torch.Tensor) -> dict[str, torch.Tensor] | None:
    b = _blocks(t)
    if b is None:
        return None
    d = (b.abs().max(1).values / 127).half().float()
    safe = torch.where(d == 0, torch.ones_like(d), d)
    q = (b / safe[:, None]).round().clamp(-128, 127)
    if not torch.equal(d[:, None] * q, b):
        return None
    return {"codes": q.to(torch.int8), "d": d.half()}


def decode_q8_0(parts: dict[str, torch.Tensor], shape) -> torch.Tensor:
    return (parts["d"].float()[:, None] * parts["codes"].float()).reshape(shape)


CODECS = {"q4_1": (encode_q4_1, decode_q4_1), "q8_0": (encode_q8_0, decode_q8_0)}


def encode_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    """Flat tensors for safetensors and the metadata that decodes them; every codec result is
    checked to decode to the identical tensor."""
    flat, meta = {}, {}
    for name, tensor in state.items():
        tensor = tensor.contiguous()
        for codec, (encode, decode) in CODECS.items():
            parts = encode(tensor)
            if parts is not None and torch.equal(decode(parts, tensor.shape), tensor):
                flat.update({f"{name}::{k}": v for k, v in parts.items()})
                meta[name] = {"codec": codec, "shape": list(tensor.shape)}
                break
        else:
            flat[name] = tensor
            meta[name] = {"codec": "raw", "shape": list(tensor.shape)}
    return flat, meta


def decode_state(flat: dict[str, torch.Tensor], meta: dict) -> dict[str, torch.Tensor]:
    state = {}
    for name, info in meta.items():
        if info["codec"] == "raw":
            state[name] = flat[name]
        else:
            parts = {k.split("::", 1)[1]: v for k, v in flat.items() if k.startswith(name + "::")}
            state[name] = CODECS[info["codec"]][1](parts, info["shape"])
    return state


# ----------------------------------------------------------------------------- pack / unpack

def _source_dir(source: str) -> Path:
    if Path(source).is_dir():
        return Path(source)
    from lmprune.zoo.loading import resolve_model_dir

    return Path(resolve_model_dir(source))


def pack(source: str, dest: Path, part_mib: float = 36) -> list[Path]:
    from safetensors.torch import load_file, save

    src = _source_dir(source)
    state = {}
    for file in sorted(src.glob("*.safetensors")):
        state.update(load_file(str(file)))
    flat, meta = encode_state(state)
    payload = save(flat)
    side = {name: (src / name).read_text() for name in SIDE_FILES if (src / name).exists()}
    blob = json.dumps({"meta": meta, "side": side}).encode() + b"\n" + payload
    digest = hashlib.sha256(blob).hexdigest()
    size = int(part_mib * 2**20)
    chunks = [blob[i:i + size] for i in range(0, len(blob), size)]
    if dest.exists():
        shutil.rmtree(dest)
    folders = []
    for index, chunk in enumerate(chunks):
        folder = dest / f"part{index}"
        folder.mkdir(parents=True)
        (folder / "data.bin").write_bytes(chunk)
        (folder / "manifest.json").write_text(json.dumps(
            {"index": index, "parts": len(chunks), "sha256": digest, "bytes": len(blob)}))
        folders.append(folder)
    codecs = {c: sum(1 for m in meta.values() if m["codec"] == c) for c in ("q4_1", "q8_0", "raw")}
    print(f"packed {src} into {len(chunks)} part(s) of <= {part_mib:g} MiB ({len(blob) / 2**20:.1f} "
          f"MiB in all; tensors by codec {codecs}) under {dest}")
    return folders


def unpack(part: Path, state_dir: Path) -> Path | None:
    """Keep ``part`` in ``state_dir``; assemble the model once every part is there."""
    manifest = json.loads((part / "manifest.json").read_text())
    state_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(part / "data.bin", state_dir / f"data.{manifest['index']}")
    have = [state_dir / f"data.{i}" for i in range(manifest["parts"])]
    missing = [i for i, p in enumerate(have) if not p.exists()]
    if missing:
        print(f"stored part {manifest['index']}; still missing parts {missing}")
        return None
    blob = b"".join(p.read_bytes() for p in have)
    if hashlib.sha256(blob).hexdigest() != manifest["sha256"]:
        raise SystemExit("staged parts do not match their checksum: stage them again")
    return assemble(blob, state_dir / "model")


def assemble(blob: bytes, out: Path) -> Path:
    from safetensors.torch import load, save_file

    header, payload = blob.split(b"\n", 1)
    info = json.loads(header)
    state = decode_state(load(payload), info["meta"])
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    for name, text in info["side"].items():
        (out / name).write_text(text)
    print(f"assembled {out} ({sum(t.numel() for t in state.values()):,} values, bit-identical to "
          f"the staged source)")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="split a model into parts (here)")
    p.add_argument("source", help="offline alias (smollm2-135m) or HF directory")
    p.add_argument("dest", type=Path)
    p.add_argument("--part-mib", type=float, default=36,
                   help="part size; 36 leaves room for the ~20 MiB working tree in a 64 MiB call")
    u = sub.add_parser("unpack", help="store one part; assemble when complete (GPU machine)")
    u.add_argument("part", type=Path)
    u.add_argument("state", type=Path)
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack(args.source, args.dest, args.part_mib)
    else:
        unpack(args.part, args.state.expanduser())
    return 0


if __name__ == "__main__":
    sys.exit(main())
