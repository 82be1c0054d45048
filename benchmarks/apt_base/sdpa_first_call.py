"""The first call of scaled-dot-product attention per shape, by backend choice and dtype.

APT's frozen teacher copy runs in bfloat16 on a GPU, where PyTorch may pick cuDNN's attention,
which builds an execution plan the first time it meets a shape. A training run whose batches
are padded to their longest review meets many shapes. This times, for each sequence length,
the first and the second call (forward only, no grad, batch 32 x 12 heads x 64, as a
BERT-base teacher runs it) under PyTorch's default backend choice and with cuDNN left out,
in bfloat16 and float32, and records which backend the profiler saw.

    python benchmarks/apt_base/sdpa_first_call.py --out DIR [--lengths 128 96 117 ...]

Writes DIR/sdpa_first_call.json and prints a table (ms).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.functional import scaled_dot_product_attention as sdpa

NO_CUDNN = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def timed(q, k, v, backends) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        if backends is None:
            sdpa(q, k, v)
        else:
            with sdpa_kernel(backends):
                sdpa(q, k, v)
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start)


def backend_seen(q, k, v, backends) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        timed(q, k, v, backends)
    names = [e.key for e in prof.key_averages() if "attention" in e.key and "aten::_" in e.key]
    return ",".join(sorted(set(names))) or "?"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--lengths", type=int, nargs="+", default=[128, 96, 117, 64, 101, 128])
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a GPU", file=sys.stderr)
        return 2
    rows = []
    for dtype in (torch.bfloat16, torch.float32):
        for name, backends in (("default", None), ("no-cudnn", NO_CUDNN)):
            for length in args.lengths:
                # a fresh length per (dtype, choice): the first call is the first of its shape
                shape = (32, 12, length + (1 if name == "no-cudnn" else 0), 64)
                q, k, v = (torch.randn(shape, device="cuda", dtype=dtype) for _ in range(3))
                first, second = timed(q, k, v, backends), timed(q, k, v, backends)
                rows.append({"dtype": str(dtype).replace("torch.", ""), "choice": name,
                             "length": shape[2], "first_ms": round(first, 3),
                             "second_ms": round(second, 3),
                             "backend": backend_seen(q, k, v, backends)})
                print(f"{rows[-1]['dtype']:9s} {name:9s} L={shape[2]:4d} first "
                      f"{first:8.2f} ms, second {second:7.3f} ms  {rows[-1]['backend']}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sdpa_first_call.json").write_text(json.dumps(
        {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
         "cudnn": torch.backends.cudnn.version(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
