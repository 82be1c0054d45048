"""lm-eval HFLM rolling perplexity of smollm2-135m: dense vs. random 20% (heads + neurons).

Both models are evaluated from a saved directory through ``HFLM(pretrained=path)``, the way
``lm_eval --model hf --model_args pretrained=PATH`` would load them; the pruned one is pruned
with lmprune, saved with ``save_pretrained`` (stock format: uniform widths) and only then
loaded. Text: the first N paragraphs of the bundled austen test split (a held-out novel),
joined into one document per chapter. Requests are lm-eval ``loglikelihood_rolling`` ones,
so word perplexity and bits/byte are what lm-eval's wikitext task would report on this text.

    .venv/bin/python benchmarks/foundation/hflm_perplexity.py            # ~20k tokens
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
CHAPTER = re.compile(r"^Chapter \d+$")


def documents(paragraphs: int) -> list[str]:
    """The first ``paragraphs`` austen test paragraphs, one document per chapter."""
    from lmprune.data import load_dataset

    docs: list[list[str]] = [[]]
    for text in load_dataset("austen", split="test")["text"][:paragraphs]:
        if CHAPTER.match(text.strip()) and docs[-1]:
            docs.append([])
        docs[-1].append(text)
    return ["\n\n".join(doc) for doc in docs if doc]


def evaluate(path: Path, texts: list[str], max_length: int) -> dict:
    from lmprune.evaluation import make_hflm, rolling_perplexity

    start = time.perf_counter()
    hflm = make_hflm(str(path), max_length=max_length, batch_size=1, device="cpu")
    loaded, cpu = time.perf_counter(), time.process_time()
    result = rolling_perplexity(hflm, texts)
    # wall time depends on what else runs on the machine; CPU time (all threads) much less
    result.update(model_class=type(hflm.model).__name__,
                  parameters=sum(p.numel() for p in hflm.model.parameters()),
                  load_seconds=round(loaded - start, 2),
                  eval_seconds=round(time.perf_counter() - loaded, 2),
                  eval_cpu_seconds=round(time.process_time() - cpu, 2),
                  loadavg_after=round(os.getloadavg()[0], 2))
    del hflm
    gc.collect()
    return result


def prune_and_save(dense_dir: str, out: Path, sparsity: float, seed: int) -> dict:
    from lmprune.arch import describe
    from lmprune.pruners.random import random_scores
    from lmprune.pruners.selection import select
    from lmprune.structures import remove
    from lmprune.structures.export import save_pretrained
    from lmprune.structures.plan import PruningPlan
    from lmprune.zoo import load_model

    loaded = load_model(dense_dir)
    structure = describe(loaded.model)
    masks = select(structure, random_scores(structure, seed), sparsity, ["heads", "neurons"])
    plan = PruningPlan.from_masks(structure, masks, {"method": "random", "sparsity": sparsity,
                                                     "seed": seed, "structures": ["heads", "neurons"]})
    remove(loaded.model, masks, structure)
    saved = save_pretrained(loaded.model, out, tokenizer=loaded.tokenizer, plan=plan, overwrite=True)
    pruned = describe(loaded.model)
    info = {"format": saved.format, "heads_per_layer": sorted({s.num_heads for s in pruned.attention}),
            "kv_heads_per_layer": sorted({s.num_kv_heads for s in pruned.attention}),
            "neurons_per_layer": sorted({s.width for s in pruned.ffn})}
    del loaded
    gc.collect()
    return info


def markdown(report: dict) -> str:
    rows = ["| model | params | word ppl | token ppl | bits/byte | eval wall s | eval CPU s |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in report["results"].items():
        rows.append(f"| {name} | {r['parameters'] / 1e6:.1f}M | {r['word_perplexity']:.2f} | "
                    f"{r['token_perplexity']:.2f} | {r['bits_per_byte']:.4f} | {r['eval_seconds']:.0f} | "
                    f"{r['eval_cpu_seconds']:.0f} |")
    first = next(iter(report["results"].values()))
    return "\n".join([
        "# HFLM rolling perplexity: smollm2-135m on austen (test)", "",
        f"Command: `{report['command']}`", "",
        *rows, "",
        f"Text: {report['text']['paragraphs']} paragraphs, {first['documents']} documents, "
        f"{first['tokens']} tokens, {first['words']} words, {first['bytes']} bytes.", "",
        f"Protocol: {first['protocol']}.", "",
        f"Pruned model: {report['pruned']}.", "",
        f"Environment: {report['environment']}.", ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--paragraphs", type=int, default=180,
                        help="first N austen test paragraphs (180 ~ 20k tokens)")
    parser.add_argument("--max-length", type=int, default=2048, help="rolling window, tokens")
    parser.add_argument("--sparsity", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "hflm_perplexity.json")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's, one per core)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the pruned model is saved (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import lm_eval
    import transformers

    from lmprune.zoo import resolve_model_dir

    texts = documents(args.paragraphs)
    dense_dir = resolve_model_dir("smollm2-135m")
    command = " ".join([".venv/bin/python", "benchmarks/foundation/hflm_perplexity.py", *(argv or sys.argv[1:])])
    report = {"command": command.strip(), "model": "smollm2-135m",
              "text": {"dataset": "austen", "split": "test", "paragraphs": args.paragraphs,
                       "documents": "consecutive paragraphs joined by blank lines, one per chapter"},
              "environment": {"torch": torch.__version__, "transformers": transformers.__version__,
                              "lm_eval": lm_eval.__version__, "threads": torch.get_num_threads(),
                              "cpu_count": os.cpu_count(), "machine": platform.machine(),
                              "loadavg_before": round(os.getloadavg()[0], 2)},
              "results": {}}
    started = time.perf_counter()
    report["results"]["dense"] = evaluate(Path(dense_dir), texts, args.max_length)
    print("dense", json.dumps(report["results"]["dense"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = (args.work_dir or Path(tmp)) / f"smollm2-135m-random{int(args.sparsity * 100)}"
        report["pruned"] = {"method": "random", "sparsity": args.sparsity, "seed": args.seed,
                            "structures": ["heads", "neurons"],
                            **prune_and_save(dense_dir, path, args.sparsity, args.seed)}
        name = f"random {args.sparsity:.0%} heads+neurons (saved, loaded from directory)"
        report["results"][name] = evaluate(path, texts, args.max_length)
        print(name, json.dumps(report["results"][name]), flush=True)
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
