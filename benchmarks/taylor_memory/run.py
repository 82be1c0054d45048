"""Peak memory of every Taylor criterion, of an AdaPruner trial and of an RI evaluation.

A LLaMA model of a given shape with random weights (``--shape 7b``: LLaMA-7B, 32 layers,
hidden 4096, FFN 11008, vocab 32000, bf16; ``small``: 8 layers, hidden 512, FFN 1408, vocab
8000, fp32, where the activations of 10 x 128 tokens weigh about as much as the weights)
scores heads and neurons of LLM-Pruner's layers (4..29 of 32, scaled to the depth) on 10
random 128-token samples, for each criterion with one batch and with micro-batches of 2.
Also measured: one AdaPruner trial (vector + element1, the mixed masks, perplexity of 8
held-out windows) and one batched RI evaluation (perplexity without each of 8 sublayers).

On CUDA the peak is ``torch.cuda.max_memory_allocated``; on CPU each case runs in a fresh
process whose resident memory is sampled every 2 ms (glibc told to return freed blocks at
once), and the peak above the loaded model is reported. Next to each measurement: the memory
model's parts (weights, per-element buffers of the pass plan, activation lower bound;
``lmprune.scorers.taylor_memory``).

    python benchmarks/taylor_memory/run.py --shape 7b --out DIR        # on a GPU
    python benchmarks/taylor_memory/run.py --shape small --out DIR     # on a CPU
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

SHAPES = {
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
               dtype="bfloat16"),
    "small": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=8, vocab_size=8000,
                  dtype="float32"),
}
CASES = [(m, b) for m in ("vector", "element1", "element2", "param_second") for b in (None, 2)]
CASES += [("adapruner-trial", None), ("ri-evaluation", None)]


def build(shape: str, device: str):
    from transformers import AutoModelForCausalLM, LlamaConfig

    spec = dict(SHAPES[shape])
    dtype = getattr(torch, spec.pop("dtype"))
    config = LlamaConfig(**spec, max_position_embeddings=2048)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def layer_range(model) -> list[int]:
    from lmprune.pruners.settings import auto_layer_range

    return auto_layer_range("taylor", model.config.num_hidden_layers)


def run_case(model, name: str, batch: int | None, device: str) -> dict:
    """Run one case; returns the memory model's parts for it."""
    from lmprune.arch import describe
    from lmprune.scorers.coupling import coupled_tensors
    from lmprune.scorers.taylor import taylor_metrics
    from lmprune.scorers.taylor_memory import activation_bytes_lower_bound, weight_bytes
    from lmprune.scorers.taylor_passes import plan_passes

    structure = describe(model)
    g = torch.Generator().manual_seed(0)
    samples = torch.randint(3, model.config.vocab_size, (10, 128), generator=g)
    kinds, lr = ("heads", "neurons"), layer_range(model)
    tensors = coupled_tensors(model, structure, kinds, lr)
    parts = {"weights": weight_bytes(model),
             "activations_lower_bound(10x128)": activation_bytes_lower_bound(
                 model, structure, tensors, 10 * 128)}
    if name == "adapruner-trial":
        _adapruner_trial(model, structure, samples, kinds, lr)
    elif name == "ri-evaluation":
        _ri_evaluation(model, structure, samples)
    else:
        plan = plan_passes(tensors, (name,), 10, batch, 0.5)
        parts.update(buffers=plan.buffer_bytes, chunks=len(plan.chunks),
                     passes=plan.passes(10))
        taylor_metrics(model, structure, samples, (name,), kinds=kinds, layer_range=lr,
                       batch_size=batch, progress=False)
    return parts


def _adapruner_trial(model, structure, samples, kinds, lr) -> None:
    from lmprune.evaluation.perplexity import perplexity_of_windows
    from lmprune.pruners.adapruner_space import Candidate, mix_scores
    from lmprune.pruners.param_budget import select_params
    from lmprune.scorers.taylor import taylor_metrics
    from lmprune.structures import apply_masks

    metrics = taylor_metrics(model, structure, samples, ("vector", "element1"), kinds=kinds,
                             layer_range=lr, progress=False)
    mixed = mix_scores(metrics["vector"], metrics["element1"], Candidate((0,), 0.5, "element1"))
    masks = select_params(model, structure, mixed, 0.2, list(kinds), 1, lr).masks
    with apply_masks(model, masks, structure):
        perplexity_of_windows(model, samples[:8])


def _ri_evaluation(model, structure, samples) -> None:
    from lmprune.pruners.sublayer_batch import candidate_perplexities
    from lmprune.structures import Masks

    names = [s.name for s in structure.attention[:4]] + [s.name for s in structure.ffn[:4]]
    candidate_perplexities(model, structure, samples[:8], Masks(), names, rows_per_pass=16)


def measure_cuda(model, name, batch) -> dict:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    parts = run_case(model, name, batch, "cuda")
    torch.cuda.synchronize()
    return {"peak_gb": torch.cuda.max_memory_allocated() / 1e9, "model_gb": base / 1e9,
            "seconds": time.perf_counter() - start, "model": parts}


def measure_cpu_child(shape: str, name: str, batch: int | None) -> dict:
    """In this (fresh) process: peak resident memory of the case above the loaded model."""
    import psutil

    model = build(shape, "cpu")
    process = psutil.Process()
    base = process.memory_info().rss
    peak, stop = [base], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    parts = run_case(model, name, batch, "cpu")
    stop.set()
    thread.join()
    return {"peak_gb": peak[0] / 1e9, "model_gb": base / 1e9, "above_model_gb": (peak[0] - base) / 1e9,
            "seconds": time.perf_counter() - start, "model": parts}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=list(SHAPES), default="7b")
    parser.add_argument("--out", default="benchmarks/taylor_memory/results")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        name, batch = args.child[0], None if args.child[1] == "none" else int(args.child[1])
        print(json.dumps(measure_cpu_child(args.shape, name, batch)))
        return 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = {"shape": args.shape, "device": device, "config": SHAPES[args.shape], "cases": {}}
    model = build(args.shape, device) if device == "cuda" else None
    for name, batch in CASES:
        key = f"{name} batch={batch or 'all'}"
        if device == "cuda":
            results["cases"][key] = measure_cuda(model, name, batch)
        else:
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
            line = subprocess.run([sys.executable, __file__, "--shape", args.shape, "--child",
                                   name, str(batch or "none")], env=env, check=True,
                                  capture_output=True, text=True).stdout.strip().splitlines()[-1]
            results["cases"][key] = json.loads(line)
        print(key, {k: round(v, 2) if isinstance(v, float) else v
                    for k, v in results["cases"][key].items() if k != "model"}, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.shape}-{device}.json").write_text(json.dumps(results, indent=1))
    print(f"| case | peak GB | above model GB | buffers GB | seconds |\n|---|---|---|---|---|")
    for key, r in results["cases"].items():
        above = r.get("above_model_gb", r["peak_gb"] - r["model_gb"])
        buffers = r["model"].get("buffers", 0) / 1e9
        print(f"| {key} | {r['peak_gb']:.2f} | {above:.2f} | {buffers:.2f} | {r['seconds']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
