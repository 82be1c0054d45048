"""Decode-step attention kernels side by side, inside CUDA graphs (issue #13: dense decode at
batch 16 spends ~0.85 ms of a ~5 ms step in attention over a 160-token static cache).

One decode step's attention at LLaMA-7B shape (32 query and key/value heads, head_dim 128;
query length 1, a static cache of ``--cache`` slots of which ``--filled`` hold keys, the rest
masked as transformers masks them) for each backend PyTorch offers:

* ``cudnn``, ``efficient``, ``math``: ``scaled_dot_product_attention`` restricted to one
  backend, with the boolean mask transformers passes ([batch, 1, 1, cache]);
* ``cudnn-nomask``, ``flash-nomask``: the same over the filled slots only and no mask (what a
  cache trimmed to its filled length would run; flash takes no mask);
* ``compiled-manual``: ``softmax(q k^T * scale + mask) v`` compiled by inductor;
* ``flex``: ``flex_attention`` compiled, the mask as a block mask over the filled length.

Each variant runs ``--layers`` calls (one per layer) captured in one CUDA graph and replayed,
so launch cost is gone as in the fast path; the time per call is the kernels' alone. The
bytes each call must read (keys and values of the filled slots) over the measured copy
bandwidth give the floor column. Outputs are checked against ``math``.

    python benchmarks/speed/decode_attention.py --out DIR [--batch 1 16] [--cache 160]
        [--filled 129] [--quick]

Writes DIR/decode_attention.json and .md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import bandwidth as measure_bandwidth  # noqa: E402  (the speed benchmark's copy)

HEADS, HEAD_DIM = 32, 128


def tensors(batch: int, cache: int, filled: int, device, dtype):
    torch.manual_seed(0)
    q = torch.randn(batch, HEADS, 1, HEAD_DIM, device=device, dtype=dtype)
    k = torch.randn(batch, HEADS, cache, HEAD_DIM, device=device, dtype=dtype)
    v = torch.randn_like(k)
    mask = torch.zeros(batch, 1, 1, cache, device=device, dtype=torch.bool)
    mask[..., :filled] = True
    return q, k, v, mask


def _sdpa(backend):
    def run(q, k, v, mask, filled):
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return run


def _sdpa_nomask(backend):
    def run(q, k, v, mask, filled):
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k[:, :, :filled], v[:, :, :filled])
    return run


def _manual(q, k, v, mask):
    scores = (q @ k.transpose(-1, -2)) * HEAD_DIM ** -0.5
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v


def _compiled_manual():
    compiled = torch.compile(_manual, dynamic=False)
    return lambda q, k, v, mask, filled: compiled(q, k, v, mask)


def _flex(cache: int, filled: int, batch: int, device):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    limit = torch.tensor(filled, device=device)
    block = create_block_mask(lambda b, h, qi, ki: ki < limit, batch, None, 1, cache,
                              device=device)
    compiled = torch.compile(flex_attention, dynamic=False)
    return lambda q, k, v, mask, filled: compiled(q, k, v, block_mask=block)


def _lazy(build):
    """Build the function at its first (warm-up) call, so a failure is that variant's alone."""
    built = []

    def run(*args):
        if not built:
            built.append(build())
        return built[0](*args)
    return run


def variants(cache: int, filled: int, batch: int, device) -> dict:
    return {"math": _sdpa(SDPBackend.MATH), "cudnn": _sdpa(SDPBackend.CUDNN_ATTENTION),
            "efficient": _sdpa(SDPBackend.EFFICIENT_ATTENTION),
            "cudnn-nomask": _sdpa_nomask(SDPBackend.CUDNN_ATTENTION),
            "flash-nomask": _sdpa_nomask(SDPBackend.FLASH_ATTENTION),
            "compiled-manual": _compiled_manual(),
            "flex": _lazy(lambda: _flex(cache, filled, batch, device))}


def graph_time(fn, args, layers: int, replays: int) -> tuple[float, torch.Tensor]:
    """Seconds per call of ``fn`` replayed ``layers`` times per CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            out = fn(*args)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(layers):
            out = fn(*args)
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / replays / layers, out


def measure(batch: int, cache: int, filled: int, layers: int, replays: int, device,
            dtype, bandwidth: float) -> list[dict]:
    q, k, v, mask = tensors(batch, cache, filled, device, dtype)
    floor_us = 1e6 * 2 * batch * HEADS * filled * HEAD_DIM * k.element_size() / bandwidth
    reference = None
    rows = []
    for name, fn in variants(cache, filled, batch, device).items():
        row = {"variant": name, "batch": batch, "cache": cache, "filled": filled,
               "floor_us": floor_us}
        try:
            seconds, out = graph_time(fn, (q, k, v, mask, filled), layers, replays)
        except Exception as error:  # a backend that refuses the shape is a result too
            row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
            rows.append(row)
            print(f"batch {batch} {name}: {row['error']}", flush=True)
            continue
        if reference is None:
            reference = out.float()
        row.update(us=1e6 * seconds, vs_floor=1e6 * seconds / floor_us,
                   max_abs_diff=float((out.float() - reference).abs().max()))
        rows.append(row)
        print(f"batch {batch} {name}: {row['us']:.1f} us ({row['vs_floor']:.2f}x floor)",
              flush=True)
    return rows


def markdown(result: dict) -> str:
    lines = [f"# Decode-step attention at LLaMA-7B shape ({result['device']})", "",
             f"torch {result['torch']}; {HEADS} heads, head_dim {HEAD_DIM}, bf16; cache "
             f"{result['cache']} slots, {result['filled']} filled; {result['layers']} calls "
             f"per CUDA graph; copy bandwidth {result['bandwidth_gbs']:.0f} GB/s", "",
             "| batch | variant | us per call | x 32 layers, ms | vs floor (K and V bytes) "
             "| max abs diff vs math |", "| ---: | --- | ---: | ---: | ---: | ---: |"]
    for row in result["rows"]:
        if "error" in row:
            lines.append(f"| {row['batch']} | {row['variant']} | {row['error']} | | | |")
            continue
        lines.append(f"| {row['batch']} | {row['variant']} | {row['us']:.1f} | "
                     f"{32 * row['us'] / 1e3:.3f} | {row['vs_floor']:.2f}x | "
                     f"{row['max_abs_diff']:.3g} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    p.add_argument("--cache", type=int, default=160)
    p.add_argument("--filled", type=int, default=129)
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--replays", type=int, default=50)
    p.add_argument("--quick", action="store_true", help="few replays (a smoke run)")
    args = p.parse_args(argv)
    if not 0 < args.filled <= args.cache:
        p.error("--filled must be between 1 and --cache")
    if not torch.cuda.is_available():
        print("decode_attention.py measures CUDA kernels: run it on a GPU", file=sys.stderr)
        return 2
    device, dtype = torch.device("cuda"), torch.bfloat16
    replays = 3 if args.quick else args.replays
    bandwidth = measure_bandwidth(device, args.quick)["bytes_per_s"]
    rows = [row for batch in args.batch
            for row in measure(batch, args.cache, args.filled, args.layers, replays, device,
                               dtype, bandwidth)]
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "cache": args.cache, "filled": args.filled, "layers": args.layers,
              "replays": replays, "bandwidth_gbs": bandwidth / 1e9, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "decode_attention.json").write_text(json.dumps(result, indent=1))
    (args.out / "decode_attention.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
