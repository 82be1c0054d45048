"""Which attention kernel a compiled encoder forward runs, and why.

The compiled RoBERTa-base profile (``encoder_profile.py``) showed no fused attention kernel:
its attention ran as two float32 FFMA matrix products and a float32 softmax per layer (SDPA's
math fallback). This script builds the model (random bf16 weights, batch x seq tokens, no
padding), then for eager and each compile mode: the milliseconds per forward, the SDPA
backend PyTorch picks for the arguments transformers passes (``torch._fused_sdp_choice``), and
the attention-related GPU kernels of one forward. A mode ``MODE:masked`` compiles without
lmprune's unpadded-batch handling (``CompiledForward(unpadded=False)``: the all-ones mask goes
into the graph, as plain ``torch.compile`` does). With ``--no-math`` the math fallback is
disabled, so PyTorch's warnings say why each fused backend was refused.

    python benchmarks/speed/encoder_attention.py --out DIR [--batch 128] [--seq 128]
        [--modes eager reduce-overhead:masked reduce-overhead ...] [--quick]
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

BACKENDS = {0: "math", 1: "flash", 2: "efficient", 3: "cudnn", 4: "overrideable"}


def captured_sdpa_args(model, inputs: dict) -> list[dict]:
    """The arguments of every SDPA call of one eager forward, as PyTorch sees them."""
    import torch.nn.functional as F
    original, calls = F.scaled_dot_product_attention, []

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        choice = torch._fused_sdp_choice(q, k, v, attn_mask, dropout_p, is_causal, scale=scale)
        calls.append({"q": list(q.shape), "q_stride": list(q.stride()), "dtype": str(q.dtype),
                      "mask": None if attn_mask is None else
                      [str(attn_mask.dtype), list(attn_mask.shape), list(attn_mask.stride())],
                      "is_causal": is_causal, "scale": scale, "extra": sorted(kw),
                      "backend": BACKENDS.get(int(choice), str(choice))})
        return original(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                        scale=scale, **kw)

    F.scaled_dot_product_attention = spy
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        F.scaled_dot_product_attention = original
    return calls[:1] + ([{"more_calls": len(calls) - 1}] if len(calls) > 1 else [])


def run_mode(model, inputs: dict, mode: str, calls: int) -> dict:
    import models
    from encoder_profile import time_and_profile

    fast = models.forward_for(model, mode)
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            for _ in range(3):
                fast(**inputs)
        except Exception as err:  # noqa: BLE001 - the reason is the result
            return {"mode": mode, "error": f"{type(err).__name__}: {str(err)[:600]}",
                    "warnings": sorted({str(w.message)[:300] for w in caught})[:12]}
        ms, table = time_and_profile(fast, inputs, calls)
    keys = ("attention", "softmax", "f32f32", "ffma", "flash", "fmha", "cudnn", "bmm")
    return {"mode": mode, "ms_per_forward": ms,
            "kinds_ms": {k: v / 1000 for k, v in table["kinds_us"].items()},
            "attention_kernels": [k for k in table["kernels"]
                                  if any(key in k["name"].lower() for key in keys)][:8],
            "warnings": sorted({str(w.message)[:300] for w in caught
                                if "attention" in str(w.message).lower()})[:12]}


def main(argv=None) -> int:
    import models

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--modes", nargs="+",
                   default=["eager", "reduce-overhead:masked", "reduce-overhead",
                            "reduce-overhead+freezing:masked", "reduce-overhead+freezing"])
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--no-math", action="store_true", help="disable the math fallback")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    model, inputs = models.encoder_batch(args.batch, args.seq, args.quick)
    device = inputs["input_ids"].device
    if args.no_math:
        torch.backends.cuda.enable_math_sdp(False)
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "batch": args.batch, "seq": args.seq,
              "attn_implementation": model.config._attn_implementation,
              "eager_sdpa_calls": captured_sdpa_args(model, inputs),
              "modes": [run_mode(model, inputs, m, args.calls) for m in args.modes]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "encoder_attention.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
