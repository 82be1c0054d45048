"""The demo's LLM part: Taylor and RI sublayer pruning of smollm2-135m, before vs after.

Both methods remove 20% of the non-embedding parameters (``prune.budget=params``): Taylor
prunes heads and neurons of layers 4-27 (``prune.layer_range=auto``), RI (normalized,
one-shot on 1 held-out window) removes whole sublayers and finishes with FFN neurons. The
dense model
is evaluated once; speedups are throughput ratios measured in this process.
"""
from __future__ import annotations

from pathlib import Path

from lmprune.config import load_config

METHODS = {
    "taylor": ["prune.method=taylor"],
    # one-shot: progressive RI costs one forward per remaining sublayer per removal, too
    # slow for a CPU demo (the benchmark runs both)
    "sublayer-ri": ["prune.method=sublayer-ri", "prune.sparsity=0.2",
                    "prune.structures=[attention,ffn]", "prune.layer_range=null",
                    "sublayer.progressive=false", "sublayer.max_windows=1"],
}


def run_llm_demo(out_dir: Path, overrides: list[str] | None = None, log=print) -> list[dict]:
    """Prune with each method; returns one row per model state (dense, then each method)."""
    from lmprune.device import describe_device, resolve_device, resolve_dtype
    from lmprune.evaluation.suite import evaluate
    from lmprune.recipes.prune import run_prune
    from lmprune.zoo import load_model

    base = load_config("demo-llm", list(overrides or []))
    device = resolve_device(base.device)
    dtype = resolve_dtype(base.model.dtype, device, "inference")
    log(f"[demo] evaluating dense {base.model.name} on {describe_device(device)}")
    dense = load_model(base.model.name, "causal-lm", dtype=dtype)
    dense_eval = evaluate(dense.model.to(device), dense.tokenizer, base.eval, progress=False)
    del dense
    rows = [_row("dense", dense_eval, dense_eval, 0.0, {})]
    for method, extra in METHODS.items():
        run = load_config("demo-llm", [*extra, f"output.dir={Path(out_dir) / method}",
                                       "output.overwrite=true", *(overrides or [])])
        log(f"[demo] {method}: pruning ~20% of the non-embedding parameters")
        outcome = run_prune(run, progress=False, log=lambda *_: None, dense_eval=dense_eval)
        m = outcome.metrics
        rows.append(_row(method, m["after"], dense_eval, m["params_removed_fraction"]["body"],
                         m.get("speedup", {}), str(outcome.out_dir / "report.md")))
    return rows


def _row(name, result, dense, removed, speedup, report="-") -> dict:
    ppl = next(iter(result["perplexity"].values()))["perplexity"]
    zs = next(iter(result.get("zero_shot", {}).values()), {})
    tps = {r["batch_size"]: r["tokens_per_s"] for r in result.get("speed", [])}
    return {"model": name, "removed": f"{removed:.1%}", "ppl": f"{ppl:.2f}",
            "acc": "-" if zs.get("acc_norm") is None else f"{zs['acc_norm']:.3f}",
            **{f"bs{b}": f"{tps[b]:.0f} tok/s" + (f" ({speedup[b]:.2f}x)" if b in speedup else "")
               for b in tps},
            "report": report}
