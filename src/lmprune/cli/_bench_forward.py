"""``lmprune bench`` for encoders (and any model that does not generate): forward throughput,
eager and on the fast path (the forward compiled; CUDA graphs on a GPU)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmprune.cli._common import print_table
from lmprune.errors import LmpruneError

#: Timed forwards per batch size at least (a forward is short; the median needs several).
MIN_REPEATS = 10


def bench_forward(args: argparse.Namespace, model, modes: list[str], sizes: list[int],
                  device, dtype) -> int:
    from lmprune.device import describe_device
    from lmprune.evaluation.compiled import default_mode
    from lmprune.evaluation.efficiency import batch_results, measure_inference

    bad = [m for m in modes if m not in ("eager", "compile")]
    if bad:
        kind = getattr(model.config, "model_type", type(model).__name__)
        raise LmpruneError(f"{kind} is not a decoder: no KV cache, so mode(s) {bad} do not "
                           "apply; use eager and/or compile")
    if args.seq_len < 1:
        raise LmpruneError(f"--seq-len must be >= 1, got {args.seq_len}")
    rows, raw = [], {}
    for mode in modes:
        compile = (args.compile_mode or default_mode(device)) if mode == "compile" else None
        result = measure_inference(model, batch_sizes=tuple(sizes), seq_len=args.seq_len,
                                   warmup=3, repeats=max(args.repeats, MIN_REPEATS),
                                   device=device, compile=compile, max_seconds=5.0)
        raw[mode] = result
        for batch, entry in sorted(batch_results(result).items()):
            rows.append({"mode": mode if compile is None else f"compile ({compile})",
                         "batch_size": batch, **entry})
    _print(rows)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"model": args.model, "device": describe_device(device),
                                   "dtype": str(dtype), "seq_len": args.seq_len,
                                   "results": raw}, indent=2))
        print(f"written: {out}")
    return 0


def _print(rows: list[dict]) -> None:
    def cell(value, spec):
        return "-" if value is None else format(value, spec)

    print_table([{**r, "tp": cell(r.get("samples_per_s"), ".1f"),
                  "ms": cell(r.get("latency_ms"), ".2f"),
                  "first": cell(r.get("first_call_s"), ".1f") + (" s" if r.get("first_call_s")
                                                                  is not None else ""),
                  "mem": cell((r.get("peak_memory") or {}).get("mb"), ".1f") + " MB",
                  "note": r.get("error", "")} for r in rows],
                [("mode", "MODE"), ("batch_size", "BATCH"), ("tp", "SAMPLES/S"),
                 ("ms", "MS/BATCH"), ("first", "FIRST CALL"), ("mem", "PEAK MEM"),
                 ("note", "NOTE")])
