"""benchmarks/llm_offline: post-training pruning of smollm2-135m, every method, equal budgets.

For each target fraction of non-embedding parameters removed (default 20% and 50%) and each
variant, the script prunes a fresh copy of the dense model, measures perplexity on held-out
Austen text (128-token windows), wordnet-defs zero-shot accuracy through lm-eval, and
generation throughput against the dense model measured in the same process; then runs a short
LoRA recovery and measures perplexity and accuracy again.

Equal budgets: block-wise methods (magnitude, random, taylor, adapruner) prune heads and
neurons in layers [4, 28) (LLM-Pruner keeps the first 4 and the last 2 layers); their
per-unit sparsity is solved so that the removed share of non-embedding parameters is as close
as the head granularity allows to the target. RI variants use a parameter budget directly;
block influence removes whole layers.

Results accumulate in OUT/results.json (a rerun skips variants already there), and
OUT/results.md is rewritten after every variant.

    python benchmarks/llm_offline/run.py --out benchmarks/llm_offline/results [--variants ...]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from lmprune.arch import describe
from lmprune.config import load_config
from lmprune.registry import load_builtin_methods
from lmprune.structures import Masks, remove
from lmprune.structures.counting import count_parameters

BLOCK = ["prune.structures=[heads,neurons]"]
VARIANTS = {
    "magnitude-l2": ["prune.method=magnitude", "magnitude.norm=2", *BLOCK],
    "random": ["prune.method=random", *BLOCK],
    "taylor-vector": ["prune.method=taylor", "taylor.importance=vector", *BLOCK],
    "taylor-element1": ["prune.method=taylor", "taylor.importance=element1", *BLOCK],
    "taylor-element2": ["prune.method=taylor", "taylor.importance=element2", *BLOCK],
    "adapruner": ["prune.method=adapruner", *BLOCK],
    "ri-progressive-normalized": ["prune.method=sublayer-ri", "prune.structures=[attention,ffn]",
                                  "sublayer.normalize=true", "sublayer.progressive=true"],
    "ri-oneshot-normalized": ["prune.method=sublayer-ri", "prune.structures=[attention,ffn]",
                              "sublayer.normalize=true", "sublayer.progressive=false"],
    "ri-progressive-raw": ["prune.method=sublayer-ri", "prune.structures=[attention,ffn]",
                           "sublayer.normalize=false", "sublayer.progressive=true"],
    "ri-oneshot-raw": ["prune.method=sublayer-ri", "prune.structures=[attention,ffn]",
                       "sublayer.normalize=false", "sublayer.progressive=false"],
    "block-influence": ["prune.method=block-influence", "prune.structures=[layers]"],
}


def removed_params(model, structure, masks: Masks) -> int:
    """Parameters that removing ``masks`` (heads / kv groups / neurons) takes away."""
    from lmprune.structures.counting import head_cost, neuron_cost

    total = 0
    for site in structure.attention:
        cost = head_cost(model, site)
        heads = masks.heads.get(site.name)
        if heads is not None:
            gone = heads.view(site.num_kv_heads, site.group_size) == 0
            total += int(gone.sum()) * cost["head"]
            if site.group_size > 1:  # a group whose query heads all go takes its k/v along
                total += int(gone.all(dim=1).sum()) * (cost["kv_group"] - site.group_size * cost["head"])
    for site in structure.ffn:
        neurons = masks.neurons.get(site.name)
        if neurons is not None:
            total += int((neurons == 0).sum()) * neuron_cost(model, site)
    return total


def solve_sparsity(model, structure, run, target: float) -> float:
    """Per-unit sparsity whose uniform selection removes the share of non-embedding
    parameters closest to ``target`` (counts depend only on how many units go, not which)."""
    from lmprune.pruners.random import random_scores
    from lmprune.pruners.selection import select

    body = count_parameters(model, structure).body
    scores = random_scores(structure)
    best, best_gap = target, float("inf")
    for step in range(1, 100):
        s = step / 100
        masks = select(structure, scores, s, list(run.prune.structures), run.prune.round_to,
                       run.prune.layer_range)
        gap = abs(removed_params(model, structure, masks) / body - target)
        if gap < best_gap:
            best, best_gap = s, gap
    return best


def evaluate(model, tokenizer, args, dense_speed=None) -> dict:
    from lmprune.data import load_dataset
    from lmprune.evaluation.perplexity import perplexity
    from lmprune.evaluation.speed import measure_speed
    from lmprune.evaluation.zeroshot import zero_shot

    texts = [t for t in load_dataset("austen", split="test")["text"] if t.strip()]
    ppl = perplexity(model, tokenizer, texts, seq_len=128, max_windows=args.windows,
                     batch_size=32, progress=False)
    acc = zero_shot(model, tokenizer, ["wordnet-defs"], limit=args.zs_limit,
                    batch_size=64)["wordnet-defs"]
    result = {"ppl": ppl.perplexity, "ppl_tokens": ppl.tokens, "acc": acc["acc"],
              "acc_norm": acc["acc_norm"], "params": count_parameters(model).as_dict()}
    result["params"].pop("per_layer")
    if args.speed:
        speed = measure_speed(model, args.batch_sizes, 64, 32, repeats=3)
        result["tokens_per_s"] = {r.batch_size: r.tokens_per_s for r in speed}
        result["peak_mb"] = {r.batch_size: r.peak_memory_mb for r in speed}
        if dense_speed:
            result["speedup"] = {b: result["tokens_per_s"][b] / dense_speed[b] for b in dense_speed}
    return result


def prune_variant(dense, tokenizer, name: str, target: float, args) -> tuple[torch.nn.Module, dict]:
    from lmprune.recipes.prune import calibration_for

    overrides = ["model.name=" + args.model, *VARIANTS[name], f"adapruner.trials={args.trials}",
                 f"prune.seed={args.seed}", "adapruner.fine=element1"]
    if "prune.structures=[heads,neurons]" in VARIANTS[name]:
        overrides.append(f"prune.layer_range=[{args.layer_range[0]},{args.layer_range[1]}]")
    run = load_config("prune", overrides)
    model = copy.deepcopy(dense)
    structure = describe(model)
    if run.prune.method == "sublayer-ri" or run.prune.structures == ["layers"]:
        run.prune.sparsity = target
    else:
        run.prune.sparsity = solve_sparsity(model, structure, run, target)
    calibration = calibration_for(run, tokenizer)
    start = time.perf_counter()
    result = load_builtin_methods().get(run.prune.method)(model, structure, run, calibration)
    masks: Masks = result if isinstance(result, Masks) else result.masks
    remove(model, masks, structure)
    info = {"sparsity_setting": run.prune.sparsity, "prune_seconds": time.perf_counter() - start,
            "removed_body": 1 - count_parameters(model).body / count_parameters(dense).body}
    if hasattr(result, "summary"):
        info["search"] = result.summary()
    return model, info


def recover_short(model, tokenizer, args) -> torch.nn.Module:
    from lmprune.recovery import recover

    run = load_config("prune", [f"recovery.max_steps={args.recovery_steps}",
                                f"recovery.warmup_steps={max(1, args.recovery_steps // 10)}",
                                "recovery.micro_batch=8"])
    with tempfile.TemporaryDirectory() as tmp:
        return recover(model, tokenizer, run, Path(tmp) / "out", progress=False).model


def write_markdown(results: dict, path: Path) -> None:
    lines = ["| target | variant | removed | ppl | ppl (LoRA) | acc_norm | acc_norm (LoRA) | "
             "speedup bs1 | bs8 | bs32 |", "|" + "---|" * 10]
    for key, r in results.items():
        if key.startswith("_"):
            continue
        sp = r.get("pruned", {}).get("speedup", {})
        rec = r.get("recovered", {})
        lines.append(
            f"| {r['target']:.0%} | {r['variant']} | {r.get('removed_body', 0):.1%} | "
            f"{r['pruned']['ppl']:.2f} | {rec.get('ppl', float('nan')):.2f} | "
            f"{r['pruned']['acc_norm']:.3f} | {rec.get('acc_norm', float('nan')):.3f} | "
            + " | ".join(f"{sp.get(str(b), sp.get(b, float('nan'))):.2f}x" for b in (1, 8, 32)) + " |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", default="benchmarks/llm_offline/results")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.2, 0.5])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--windows", type=int, default=200, help="128-token perplexity windows")
    parser.add_argument("--zs-limit", type=int, default=500, help="wordnet-defs questions")
    parser.add_argument("--trials", type=int, default=30, help="AdaPruner TPE trials")
    parser.add_argument("--recovery-steps", type=int, default=100)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--no-speed", dest="speed", action="store_false")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layer-range", type=int, nargs=2, default=[4, 28],
                        help="layers block-wise methods prune (default 4 28 of SmolLM2's 30)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    from lmprune.zoo import load_model

    loaded = load_model(args.model, "causal-lm")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dense, tokenizer = loaded.model.to(device).eval(), loaded.tokenizer
    if "_dense" not in results:
        results["_dense"] = evaluate(dense, tokenizer, args)
        results["_dense"]["device"] = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
        results["_command"] = " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])
    dense_speed = {int(k): v for k, v in results["_dense"].get("tokens_per_s", {}).items()}
    for target in args.targets:
        for name in args.variants:
            key = f"{target:.2f}/{name}"
            if key in results:
                continue
            print(f"[bench] {key}", flush=True)
            model, info = prune_variant(dense, tokenizer, name, target, args)
            entry = {"target": target, "variant": name, **info,
                     "pruned": evaluate(model, tokenizer, args, dense_speed)}
            if args.recovery_steps:
                model = recover_short(model, tokenizer, args)
                no_speed = argparse.Namespace(**{**vars(args), "speed": False})
                entry["recovered"] = evaluate(model, tokenizer, no_speed)
            results[key] = entry
            results_file.write_text(json.dumps(results, indent=1, default=str))
            write_markdown(results, out / "results.md")
            del model
            if device == "cuda":
                torch.cuda.empty_cache()
    write_markdown(results, out / "results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
