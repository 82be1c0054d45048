"""Where the host time of one compiled encoder call goes.

A compiled forward replays a CUDA graph, but every call first runs Python on the host
(lmprune's wrapper, Dynamo's guards, the CUDA-graph tree's checks). When the GPU work of a
pruned model gets short, that host time decides the speed if calls are synchronised one by
one (as ``measure_inference`` times them). For dense and pruned RoBERTa-base (batch x seq,
random bf16 weights) and each compile mode: ms per call synchronised after each call, ms per
call pipelined (``--calls`` calls, one synchronisation), as ``measure_inference`` times it, and a cProfile of synchronised calls
(top functions by cumulative time).

    python benchmarks/speed/call_overhead.py --out DIR [--variants dense uniform-60]
        [--modes reduce-overhead+freezing reduce-overhead+freezing:masked] [--batch 128] [--quick]
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def timings(fast, inputs: dict, device, calls: int) -> dict:
    from lmprune.device import synchronize

    one_by_one = []
    for _ in range(calls):
        synchronize(device)
        start = time.perf_counter()
        fast(**inputs)
        synchronize(device)
        one_by_one.append(1000 * (time.perf_counter() - start))
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fast(**inputs)
    host = 1000 * (time.perf_counter() - start) / calls
    synchronize(device)
    pipelined = 1000 * (time.perf_counter() - start) / calls
    return {"ms_synchronised": statistics.median(one_by_one), "ms_pipelined": pipelined,
            "host_ms_per_call_pipelined": host}


def via_measure_inference(model, fast, inputs: dict, device) -> float:
    """ms per call as ``measure_inference`` times it (the speed benchmark's numbers), on the
    same compiled wrapper."""
    from lmprune.evaluation.efficiency import _measure_batch

    cuda = device.type == "cuda"
    return _measure_batch(model, fast, inputs, device, warmup=5 if cuda else 1,
                          repeats=20 if cuda else 2, max_seconds=3.0)["latency_ms"]


def host_profile(fast, inputs: dict, device, calls: int, top: int) -> str:
    from lmprune.device import synchronize

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fast(**inputs)
        synchronize(device)
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(top)
    return text.getvalue()


def main(argv=None) -> int:
    import models
    from encoder_profile import variant

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--variants", nargs="+", default=["dense", "uniform-60"])
    p.add_argument("--modes", nargs="+", default=["reduce-overhead+freezing",
                                                  "reduce-overhead+freezing:masked"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--calls", type=int, default=30)
    p.add_argument("--top", type=int, default=35)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    dense, inputs = models.encoder_batch(args.batch, args.seq, args.quick)
    device = inputs["input_ids"].device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for name in args.variants:
        model = variant(dense, name)
        for mode in args.modes:
            fast = models.forward_for(model, mode)  # MODE:masked: unpadded=False
            with torch.inference_mode():
                for _ in range(3):
                    fast(**inputs)
                run = {"variant": name, "mode": mode,
                       **timings(fast, inputs, device, args.calls),
                       "ms_measure_inference": via_measure_inference(model, fast, inputs, device)}
                text = host_profile(fast, inputs, device, args.calls, args.top)
            (out / f"cprofile-{name}-{mode.replace(':', '-')}.txt").write_text(text)
            print(json.dumps(run), flush=True)
            runs.append(run)
    (out / "call_overhead.json").write_text(json.dumps(
        {"device": str(device), "torch": torch.__version__, "batch": args.batch,
         "seq": args.seq, "calls": args.calls, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
