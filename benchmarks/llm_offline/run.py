"""benchmarks/llm_offline: post-training pruning of smollm2-135m at equal parameter budgets.

For each calibration seed, target share of non-embedding parameters removed (default 20% and
50%) and variant, the script prunes a fresh copy of the dense model with every method's
default settings (``prune.budget=params``: each row removes the target within 0.2 points;
``prune.layer_range=auto``), measures perplexity on held-out Austen text (*Persuasion*,
128-token windows), runs a short LoRA recovery and measures perplexity again.

Variants (default set): the Taylor criteria (vector, element1, element2, param_second),
AdaPruner with TPE and with random search (same trial count), and RI sublayer pruning
normalized/raw x progressive/one-shot. AdaPruner also scores every trial on ``--probe``
test windows (never seen by the search) to report how well its objective predicts test
perplexity; every search history goes to ``adapruner_histories.json``.

Results accumulate in OUT/results.json (a rerun skips rows already there; ``--time-budget``
stops starting new rows, seeds are completed in order); OUT/results.md holds the per-row and
the mean +- std tables and the targets; the last lines printed are the summary table.

    python benchmarks/llm_offline/run.py --out DIR [--model smollm2-135m|DIR] [--seeds 0 1 2]
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
from lmprune.structures import Masks, remove
from lmprune.structures.counting import count_parameters

sys.path.insert(0, str(Path(__file__).resolve().parent))
from summary import write_outputs  # noqa: E402 (this folder's tables and plots)

TAYLOR = ["prune.method=taylor"]  # every method at its defaults (docs/pruning_defaults.md)
ADA = ["prune.method=adapruner"]
RI = ["prune.method=sublayer-ri"]
VARIANTS = {
    "taylor-vector": [*TAYLOR, "taylor.importance=vector"],
    "taylor-element1": [*TAYLOR, "taylor.importance=element1"],
    "taylor-element2": [*TAYLOR, "taylor.importance=element2"],
    "taylor-param_second": [*TAYLOR, "taylor.importance=param_second"],
    "adapruner-tpe": [*ADA, "adapruner.sampler=tpe"],
    "adapruner-random": [*ADA, "adapruner.sampler=random"],
    "ri-progressive-normalized": [*RI, "sublayer.normalize=true", "sublayer.progressive=true"],
    "ri-oneshot-normalized": [*RI, "sublayer.normalize=true", "sublayer.progressive=false"],
    "ri-progressive-raw": [*RI, "sublayer.normalize=false", "sublayer.progressive=true"],
    "ri-oneshot-raw": [*RI, "sublayer.normalize=false", "sublayer.progressive=false"],
    "magnitude-l2": ["prune.method=magnitude", "magnitude.norm=2"],
    "random": ["prune.method=random"],
    "block-influence": ["prune.method=block-influence"],
}
DEFAULT_VARIANTS = [v for v in VARIANTS if v not in ("magnitude-l2", "random", "block-influence")]
TAYLOR_ROWS = [v for v in VARIANTS if v.startswith("taylor-")]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="alias or HF directory")
    parser.add_argument("--out", default="benchmarks/llm_offline/results")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.2, 0.5])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="calibration seeds (data.seed = prune.seed)")
    parser.add_argument("--windows", type=int, default=200, help="128-token test windows")
    parser.add_argument("--probe", type=int, default=64,
                        help="test windows every AdaPruner trial is also scored on")
    parser.add_argument("--trials", type=int, default=30, help="AdaPruner trials")
    parser.add_argument("--heldout", type=int, default=32,
                        help="held-out calibration windows (AdaPruner's objective, RI)")
    parser.add_argument("--recovery-steps", type=int, default=50, help="0: no recovery")
    parser.add_argument("--rows-per-pass", type=int, default=256,
                        help="windows per batched RI forward")
    parser.add_argument("--set", dest="extra", nargs="*", default=[],
                        help="extra key=value overrides for every variant")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds after which no new row is started (rerun to resume)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars of the searches (TQDM_DISABLE=1: none at all)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="processes sharing the device, one per seed at a time (a 135M "
                             "model leaves a GPU mostly idle between kernel launches)")
    return parser.parse_args(argv)


def test_windows(tokenizer, count: int) -> torch.Tensor:
    """The first ``count`` 128-token windows of austen/test (the perplexity protocol's)."""
    from lmprune.data import load_dataset
    from lmprune.evaluation.perplexity import _token_prefix

    texts = [t for t in load_dataset("austen", split="test")["text"] if t.strip()]
    ids = _token_prefix(tokenizer, texts, count * 128)
    n = min(count, len(ids) // 128)
    return ids[: n * 128].view(n, 128)


def perplexity(model, windows: torch.Tensor) -> float:
    from lmprune.evaluation.perplexity import perplexity_of_windows

    return perplexity_of_windows(model, windows, batch_size=32)


def run_config(name: str, target: float, seed: int, args):
    return load_config("prune", ["model.name=" + args.model, *VARIANTS[name],
                                 f"prune.sparsity={target}", f"data.seed={seed}",
                                 f"prune.seed={seed}", f"seed={seed}",
                                 f"adapruner.trials={args.trials}",
                                 f"adapruner.heldout={args.heldout}",
                                 f"sublayer.rows_per_pass={args.rows_per_pass}", *args.extra])


def prune_row(dense, tokenizer, name: str, target: float, seed: int, args,
              probe: torch.Tensor) -> tuple[torch.nn.Module, dict]:
    """Prune a copy of ``dense`` with variant ``name``; the model and what the row records."""
    from lmprune.pruners.adapruner import adapruner_search
    from lmprune.pruners.settings import settings_record
    from lmprune.pruners.sublayer import search_from_run
    from lmprune.recipes.prune import calibration_for
    from lmprune.registry import load_builtin_methods

    run = run_config(name, target, seed, args)
    model = copy.deepcopy(dense)
    structure = describe(model)
    calibration = calibration_for(run, tokenizer)
    info: dict = {"settings": settings_record(run, structure)}
    start = time.perf_counter()
    if run.prune.method == "adapruner":
        result = adapruner_search(model, structure, run, calibration, progress=not args.quiet,
                                  probe=probe)
        masks = result.masks
        info["search"] = {"best_trial": result.best_trial, "best_value": result.best_value,
                          "best_candidate": result.best_candidate,
                          "search_best_trial": result.search_best_trial,
                          "confirm_value": result.confirm_value,
                          "consensus_of": result.consensus_of,
                          "consensus_value": result.consensus_value,
                          "uses_consensus": result.uses_consensus,
                          "spearman_objective_test": result.objective_probe_correlation(),
                          "history": result.history}
    elif run.prune.method == "sublayer-ri":
        result = search_from_run(model, structure, run, calibration, progress=not args.quiet)
        masks = result.masks
        info["search"] = {"removed": result.removed, "finish": result.finish}
    else:
        masks = load_builtin_methods().get(run.prune.method)(model, structure, run, calibration)
    info["prune_seconds"] = time.perf_counter() - start
    assert isinstance(masks, Masks)
    remove(model, masks, structure)
    info["removed_body"] = 1 - count_parameters(model).body / count_parameters(dense).body
    return model, info


def recover_short(model, tokenizer, args, seed: int) -> torch.nn.Module:
    from lmprune.recovery import recover

    run = load_config("prune", [f"recovery.max_steps={args.recovery_steps}",
                                f"recovery.warmup_steps={max(1, args.recovery_steps // 10)}",
                                "recovery.micro_batch=8", f"seed={seed}"])
    with tempfile.TemporaryDirectory() as tmp:
        return recover(model, tokenizer, run, Path(tmp) / "out", checkpoint_every=10**9,
                       progress=False).model


def run_jobs(args, argv) -> dict:
    """One child process per seed (at most ``args.jobs`` at a time), each with its own output
    folder OUT/seed<s>; returns their rows merged."""
    import subprocess

    argv = list(argv if argv is not None else sys.argv[1:])
    base = _without(argv, ("--seeds", "--out", "--jobs"))
    pending = list(args.seeds)
    running: list[subprocess.Popen] = []
    while pending or running:
        while pending and len(running) < args.jobs:
            seed = pending.pop(0)
            cmd = [sys.executable, __file__, *base, "--seeds", str(seed), "--jobs", "1",
                   "--out", str(Path(args.out) / f"seed{seed}")]
            running.append(subprocess.Popen(cmd))
        time.sleep(1)
        running = [p for p in running if p.poll() is None]
    merged: dict = {}
    for seed in args.seeds:
        path = Path(args.out) / f"seed{seed}" / "results.json"
        if path.exists():
            part = json.loads(path.read_text())
            merged.setdefault("_dense", part.get("_dense"))
            merged.update({k: v for k, v in part.items() if not k.startswith("_")})
    return merged


def _without(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """``argv`` without the given options and their values."""
    out, skip = [], False
    for arg in argv:
        if arg in options:
            skip = True
            continue
        if skip and not arg.startswith("--"):
            continue
        skip = False
        out.append(arg)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    if args.jobs > 1 and len(args.seeds) > 1:
        results = run_jobs(args, argv)
        results_file.write_text(json.dumps(results, indent=1, default=str))
        print(write_outputs(results, out))
        return 0
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    from lmprune.zoo import load_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    loaded = load_model(args.model, "causal-lm", dtype=torch.float32)
    dense, tokenizer = loaded.model.to(device).eval(), loaded.tokenizer
    windows = test_windows(tokenizer, args.windows)
    probe = windows[:args.probe] if args.probe else None
    if "_dense" not in results:
        results["_dense"] = {"ppl": perplexity(dense, windows), "windows": len(windows),
                             "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
                             "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])}
    started = time.perf_counter()
    stopped = False
    for seed in args.seeds:
        for target in args.targets:
            for name in args.variants:
                key = f"{target:.2f}/{name}/seed{seed}"
                if key in results:
                    continue
                if args.time_budget and time.perf_counter() - started > args.time_budget:
                    stopped = True
                    break
                row_start = time.perf_counter()
                print(f"[bench] {key}", flush=True)
                model, info = prune_row(dense, tokenizer, name, target, seed, args, probe)
                entry = {"target": target, "variant": name, "seed": seed, **info,
                         "ppl": perplexity(model, windows)}
                if args.recovery_steps:
                    model = recover_short(model, tokenizer, args, seed)
                    entry["ppl_recovered"] = perplexity(model, windows)
                entry["row_seconds"] = time.perf_counter() - row_start
                results[key] = entry
                results_file.write_text(json.dumps(results, indent=1, default=str))
                print(f"[bench] {key}: removed {entry['removed_body']:.2%}, ppl {entry['ppl']:.2f}"
                      f"{', recovered %.2f' % entry['ppl_recovered'] if 'ppl_recovered' in entry else ''}"
                      f" ({entry['row_seconds']:.0f} s)", flush=True)
                del model
                if device == "cuda":
                    torch.cuda.empty_cache()
    summary = write_outputs(results, out)
    print(summary)
    if stopped:
        print(f"[bench] time budget reached: rerun the same command to finish the remaining rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
