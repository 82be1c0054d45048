"""benchmarks/llm_offline/stage_model.py: the staged model is bit-identical, in parts."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from safetensors.torch import load_file

from lmprune.zoo import build_tiny

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "llm_offline" / "stage_model.py"
spec = importlib.util.spec_from_file_location("stage_model", SCRIPT)
stage = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stage)


def gguf_like(rows: int, cols: int, codec: str, seed: int = 0) -> torch.Tensor:
    """A matrix whose 32-value blocks are exactly d * q + m (q4_1) or d * q (q8_0)."""
    g = torch.Generator().manual_seed(seed)
    blocks = rows * cols // 32
    d = (torch.rand(blocks, generator=g) * 0.01 + 1e-4).half().float()
    if codec == "q4_1":
        q = torch.randint(0, 16, (blocks, 32), generator=g).float()
        q[:, 0], q[:, 1] = 0, 15  # the quantizer maps a block's min to 0 and max to 15
        m = (-torch.rand(blocks, generator=g) * 0.05).half().float()
        return (d[:, None] * q + m[:, None]).reshape(rows, cols)
    q = torch.randint(-127, 128, (blocks, 32), generator=g).float()
    q[:, 0] = 127
    return (d[:, None] * q).reshape(rows, cols)


def test_codecs_are_lossless_and_refuse_other_tensors():
    state = {"a": gguf_like(8, 64, "q4_1"), "e": gguf_like(16, 32, "q8_0", 1),
             "norm": torch.rand(64), "dense": torch.randn(8, 64)}
    flat, meta = stage.encode_state(state)
    assert {k: v["codec"] for k, v in meta.items()} == \
        {"a": "q4_1", "e": "q8_0", "norm": "raw", "dense": "raw"}
    assert flat["a::codes"].numel() == 8 * 64 // 2  # two 4-bit codes per byte
    decoded = stage.decode_state(flat, meta)
    assert all(torch.equal(decoded[k], state[k]) and decoded[k].dtype == state[k].dtype
               for k in state)


def test_pack_and_unpack_rebuild_the_directory(tmp_path):
    model = build_tiny("tiny-llama")
    model.save_pretrained(tmp_path / "src")
    folders = stage.pack(str(tmp_path / "src"), tmp_path / "parts", part_mib=0.05)
    assert len(folders) > 1  # 50 KiB parts
    for folder in folders[:-1]:
        assert stage.unpack(folder, tmp_path / "state") is None  # waits for the rest
    out = stage.unpack(folders[-1], tmp_path / "state")
    original = load_file(str(tmp_path / "src" / "model.safetensors"))
    rebuilt = load_file(str(out / "model.safetensors"))
    assert original.keys() == rebuilt.keys()
    assert all(torch.equal(original[k], rebuilt[k]) for k in original)
    assert (out / "config.json").read_text() == (tmp_path / "src" / "config.json").read_text()
