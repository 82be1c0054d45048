"""benchmarks/speed: measured speed of dense vs pruned models against the ideal, and the cost
of pruning at LLaMA-7B shape (Taylor scoring, an AdaPruner trial, RI per sublayer; issues
#12, #13). One command; results in OUT/results.json
(written after every measurement), OUT/results.md, and a short table printed last.

    python benchmarks/speed/run.py --out benchmarks/speed/results/h200        # a GPU
    python benchmarks/speed/run.py --quick --out /tmp/speed                   # CPU smoke run

Sections (``--sections``; they run in this order, most decisive first): ``encoder``
(RoBERTa-base shape, throughput at batch 32/128/512 x 128 tokens), ``micro`` (GEMMs at
aligned and unaligned widths, decode attention per head layout), ``llama7b`` (LLaMA-7B
shape, 20% only: Taylor element1/element2 cost, then prefill and decode at batch 1 and 16,
eager and fast path, in memory and exported/reloaded), ``cost`` (LLaMA-7B and SmolLM2-135M
shapes: one AdaPruner trial, cold and warm, and RI scoring per sublayer, with an estimate of
the whole RI search; ``cost.py``), ``smollm2`` (SmolLM2-135M shape:
prefill and decode at batch 1/8/32, eager and fast path), ``evidence`` (aten ops per decode
step, torch.compile graph breaks, hooks). ``--budget-s`` caps the wall time: before each
measurement the script checks its cost estimate against the time left and records what it
skipped, so it always finishes and writes its results.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cost  # noqa: E402
import report  # noqa: E402
import sections  # noqa: E402

SECTIONS = ("encoder", "micro", "llama7b", "cost", "smollm2", "evidence")
#: Seconds each kind of measurement is expected to take on an H200 (quick: a CPU, tiny shapes).
COSTS = {"encoder_model": 4, "encoder_compile": 60, "smollm2-135m_eager": 4,
         "smollm2-135m_compile": 35,
         "smollm2-135m_variant": 3, "llama-7b_eager": 6, "llama-7b_compile": 45,
         "llama-7b_variant": 20, "taylor_element1": 10, "taylor_element2": 30,
         "evidence_model": 10, "cost_llama-7b_model": 20, "cost_smollm2-135m_model": 3,
         "cost_ri": 5, "cost_trial": 30}
QUICK_COSTS = {key: 1 for key in COSTS}


def settings(quick: bool) -> dict:
    small = {"sparsities": [0.2, 0.4, 0.6, 0.8], "eager_batch_sizes": [1, 8, 32],
             "fast_batch_sizes": [1, 32], "prompt_len": 128, "new_tokens": 32, "repeats": 3,
             "calibration": [4, 64], "reload": False,
             "variants": ["taylor-uniform-20", "taylor-uniform-40", "taylor-uniform-60",
                          "taylor-uniform-80", "taylor-uniform-20-unaligned",
                          "taylor-llm-pruner-20", "sublayers-20"],
             "fast_variants": ["dense", "taylor-uniform-20", "taylor-llm-pruner-20",
                               "sublayers-20"]}
    llama = {"sparsities": [0.2], "eager_batch_sizes": [1, 16], "fast_batch_sizes": [1, 16],
             "prompt_len": 128, "new_tokens": 32, "repeats": 2, "calibration": [10, 128],
             "reload": True, "cost": True,
             "variants": ["taylor-uniform-20", "taylor-uniform-20-in-memory",
                          "taylor-uniform-20-unaligned", "taylor-llm-pruner-20"],
             "fast_variants": ["dense", "taylor-uniform-20", "taylor-llm-pruner-20"]}
    encoder = {"batch_sizes": [32, 128, 512], "seq_len": 128, "fast_batch_sizes": [128, 512],
               "fast_variants": ["uniform-20", "uniform-40", "uniform-60", "global-40",
                                 "hidden-60"]}
    if quick:
        small.update(eager_batch_sizes=[1, 4], fast_batch_sizes=[1], prompt_len=16,
                     new_tokens=4, repeats=1, calibration=[2, 16])
        llama.update(eager_batch_sizes=[1, 2], fast_batch_sizes=[1], prompt_len=16,
                     new_tokens=4, repeats=1, calibration=[2, 16])
        encoder.update(batch_sizes=[2, 8], seq_len=32, fast_batch_sizes=[8],
                       fast_variants=["uniform-60"])
    return {"encoder": encoder, "smollm2-135m": small, "llama-7b": llama}


class Budget:
    """Wall-time guard: a measurement runs only if its estimated cost fits what is left."""

    def __init__(self, seconds: float, costs: dict):
        self.start, self.seconds, self.costs = time.perf_counter(), seconds, costs

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def observe(self, kind: str, seconds: float) -> None:
        """Use what a measurement of ``kind`` actually took as its next estimate."""
        self.costs[kind] = seconds

    def allows(self, kind: str, what: dict, results: dict) -> bool:
        if self.left() >= self.costs.get(kind, 5):
            return True
        results.setdefault("skipped", []).append({**what, "kind": kind, "reason":
                                                  f"time budget ({self.left():.0f} s left)"})
        return False


class Context:
    def __init__(self, args):
        from lmprune.device import resolve_device, resolve_dtype

        self.quick, self.out = args.quick, Path(args.out)
        self.device = resolve_device(args.device)
        self.dtype = resolve_dtype("auto", self.device, "inference")
        # compiling on a CPU costs minutes for nothing the quick run checks: static cache there
        self.fast_mode = "compile" if self.device.type == "cuda" or args.compile else "static"
        # the encoder's fast path: a compiled forward (CUDA graphs on a GPU); none on a CPU
        # unless --compile (then without graphs, which CPUs lack)
        from lmprune.evaluation.compiled import default_mode

        self.encoder_compile = (args.compile_mode if self.device.type == "cuda"
                                else default_mode(self.device) if args.compile else None)
        self.compile_mode = args.compile_mode  # of the decode step too
        self.decode_attention = args.decode_attention
        self.fast_only, self.variants = args.fast_only, args.variants
        self.settings = settings(args.quick)
        if args.fast_batch_sizes:
            for shape in ("smollm2-135m", "llama-7b", "encoder"):
                self.settings[shape]["fast_batch_sizes"] = args.fast_batch_sizes
        if args.variants:  # the encoder's compiled rows too (its eager rows are cheap)
            encoder = self.settings["encoder"]
            encoder["fast_variants"] = [v for v in encoder["fast_variants"] if v in args.variants]
        self.budget = Budget(args.budget_s, dict(QUICK_COSTS if args.quick else COSTS))

    def save(self, results: dict) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / "results.json.tmp"  # a timeout never leaves half a file behind
        tmp.write_text(json.dumps(results, indent=1, default=str))
        tmp.replace(self.out / "results.json")


def meta(ctx: Context, args) -> dict:
    import transformers

    from lmprune.device import describe_device
    from lmprune.evaluation.ideal import bandwidth_of

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE,
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    name = torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else platform.processor()
    return {"command": " ".join(sys.argv), "device": describe_device(ctx.device),
            "device_name": name, "dtype": str(ctx.dtype), "fast_mode": ctx.fast_mode,
            "compile_mode": ctx.compile_mode, "decode_attention": ctx.decode_attention,
            "fast_only": ctx.fast_only,
            "variants": ctx.variants,
            "quick": ctx.quick, "budget_s": args.budget_s, "sections": args.sections,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "cuda": torch.version.cuda,
            "lmprune_commit": commit or "unknown", "settings": ctx.settings,
            "spec_bandwidth": bandwidth_of(name) if ctx.device.type == "cuda" else None,
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (CPU smoke run)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {', '.join(SECTIONS)}")
    parser.add_argument("--budget-s", type=float, default=450.0, help="wall-time cap (s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--compile", action="store_true",
                        help="compile the decode step on a CPU too (slow; GPUs always do)")
    parser.add_argument("--compile-mode", default="reduce-overhead",
                        choices=["reduce-overhead", "max-autotune", "reduce-overhead+freezing",
                                 "max-autotune+freezing"],
                        help="torch.compile mode of the fast path on a GPU (default: "
                             "reduce-overhead = CUDA graphs; max-autotune also tunes GEMMs)")
    parser.add_argument("--decode-attention", default="sdpa", choices=["sdpa", "filled"],
                        help="decoders: the decode steps' attention over the static cache "
                             "(lmprune.generation.fast.ATTENTIONS; filled reads only the "
                             "slots that hold keys)")
    parser.add_argument("--fast-only", action="store_true",
                        help="decoders: skip the eager rows and the extra Taylor cost rows")
    parser.add_argument("--fast-batch-sizes", type=lambda t: [int(b) for b in t.split(",") if b],
                        help="batch sizes of the fast path (default per shape: 1,32 for "
                             "SmolLM2, 1,16 for LLaMA-7B, 128,512 for the encoder)")
    parser.add_argument("--variants", type=lambda t: [v for v in t.split(",") if v],
                        help="only these pruned variants (and dense) on the fast path, e.g. "
                             "taylor-uniform-20,taylor-llm-pruner-20 (decoders; their eager "
                             "rows too) or uniform-60 (the encoder's compiled rows)")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    ctx = Context(args)
    results = {"meta": meta(ctx, args)}
    results["bandwidth"] = sections.measure.guarded(sections.measure.bandwidth, ctx.device,
                                                    ctx.quick)
    ctx.save(results)
    runners = {"encoder": lambda: sections.encoder_section(ctx, results),
               "micro": lambda: sections.micro_section(ctx, results),
               "llama7b": lambda: sections.decoder_section(ctx, results, "llama-7b"),
               "cost": lambda: cost.cost_section(ctx, results),
               "smollm2": lambda: sections.decoder_section(ctx, results, "smollm2-135m"),
               "evidence": lambda: sections.evidence_section(ctx, results)}
    for name in [s for s in SECTIONS if s in chosen]:
        start = time.perf_counter()
        outcome = sections.measure.guarded(runners[name])  # None on success
        results.setdefault("section_seconds", {})[name] = round(time.perf_counter() - start, 1)
        if isinstance(outcome, dict) and "error" in outcome:
            results.setdefault("errors", {})[name] = outcome
        ctx.save(results)
    results["meta"]["seconds"] = round(time.perf_counter() - ctx.budget.start, 1)
    ctx.save(results)
    markdown = report.write(results, ctx.out / "results.md")
    print(report.summary(results))
    print(f"\nresults: {ctx.out / 'results.json'}, {markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
