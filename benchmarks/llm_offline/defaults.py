"""Which settings are best for block-wise Taylor pruning of smollm2-135m (the defaults).

Prunes with ``taylor`` at an equal parameter budget under one setting at a time (everything
else at the library defaults) and measures test perplexity without recovery:

* layer range: all layers, LLM-Pruner's first 1/8 + last 1/16 kept (``auto``), and
  neighbours of it;
* allocation of the budget: ``uniform`` vs ``global``;
* structures: heads + neurons, neurons only, key/value groups + neurons;
* criterion: vector, element1, element2, param_second;
* vector reduction: LLM-Pruner's per-row ``channel`` form vs the whole-head ``group`` form.

    python benchmarks/llm_offline/defaults.py --out DIR [--target 0.2] [--seeds 0] [--windows 24]

Results: DIR/defaults.json (one entry per setting and seed) and a table printed last.
On 2 shared CPU cores one setting takes 1-3 minutes (element2 and param_second the longest).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import perplexity, prune_row, test_windows  # noqa: E402

SETTINGS = {
    "defaults (element1, auto layers, uniform)": [],
    "heads rounded to nearest": ["prune.head_rounding=nearest"],
    "all layers": ["prune.layer_range=null"],
    "layers [2, 29)": ["prune.layer_range=[2,29]"],
    "layers [6, 28)": ["prune.layer_range=[6,28]"],
    "layers [4, 26)": ["prune.layer_range=[4,26]"],
    "global allocation": ["prune.allocation=global"],
    "neurons only": ["prune.structures=[neurons]"],
    "kv groups + neurons": ["prune.structures=[kv_groups,neurons]"],
    "neurons only, layers [4, 26)": ["prune.structures=[neurons]", "prune.layer_range=[4,26]"],
    "neurons only, all layers": ["prune.structures=[neurons]", "prune.layer_range=null"],
    "neurons only, global allocation": ["prune.structures=[neurons]", "prune.allocation=global"],
    "vector": ["taylor.importance=vector"],
    "vector, group reduction": ["taylor.importance=vector", "taylor.reduction=group"],
    "element2": ["taylor.importance=element2"],
    "param_second": ["taylor.importance=param_second"],
    # with heads pruned at 20% too (LLM-Pruner's rounding removes none there)
    "layers [4, 26), heads rounded to nearest": ["prune.layer_range=[4,26]",
                                                 "prune.head_rounding=nearest"],
    "kv groups + neurons, rounded to nearest": ["prune.structures=[kv_groups,neurons]",
                                                "prune.head_rounding=nearest"],
    "vector, heads rounded to nearest": ["taylor.importance=vector",
                                         "prune.head_rounding=nearest"],
    "vector, group reduction, heads rounded to nearest": [
        "taylor.importance=vector", "taylor.reduction=group", "prune.head_rounding=nearest"],
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", default="benchmarks/llm_offline/results/defaults")
    parser.add_argument("--target", type=float, default=0.2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--windows", type=int, default=24)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "defaults.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    from lmprune.zoo import load_model

    loaded = load_model(args.model, "causal-lm", dtype=torch.float32)
    dense, tokenizer = loaded.model.eval(), loaded.tokenizer
    windows = test_windows(tokenizer, args.windows)
    results.setdefault("_dense", {"ppl": perplexity(dense, windows), "windows": len(windows)})
    bench = argparse.Namespace(model=args.model, trials=1, heldout=8, rows_per_pass=32,
                               quiet=True, extra=[])
    for name in args.settings:
        for seed in args.seeds:
            key = f"{args.target:.2f}/{name}/seed{seed}"
            if key in results:
                continue
            bench.extra = SETTINGS[name]
            start = time.perf_counter()
            model, info = prune_row(dense, tokenizer, "taylor-element1", args.target, seed,
                                    bench, None)
            results[key] = {"setting": name, "seed": seed, "ppl": perplexity(model, windows),
                            "removed_body": info["removed_body"],
                            "settings": info["settings"]["summary"],
                            "seconds": time.perf_counter() - start}
            path.write_text(json.dumps(results, indent=1))
            print(f"[defaults] {key}: ppl {results[key]['ppl']:.2f}, removed "
                  f"{info['removed_body']:.2%}", flush=True)
    print(f"dense perplexity {results['_dense']['ppl']:.2f} on {len(windows)} windows")
    print(f"| setting ({args.target:.0%} removed) | ppl (mean over seeds) | removed |")
    print("|---|---|---|")
    for name in SETTINGS:
        found = [r for k, r in results.items() if not k.startswith("_")
                 and r["setting"] == name and k.startswith(f"{args.target:.2f}/")]
        if found:
            print(f"| {name} | {statistics.fmean(r['ppl'] for r in found):.2f} | "
                  f"{statistics.fmean(r['removed_body'] for r in found):.2%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
