"""Run the offline demo: prune the offline models, save, reload, compare methods."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lmprune.cli._common import add_command, print_table
from lmprune.cli._device import add_device_argument, device_overrides

DEFAULT_MODELS = ("minilm-l6", "smollm2-135m")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "demo", help="prune the offline models, save, reload and compare",
        description="Part 1 (structures): load both offline models (minilm-l6, smollm2-135m), "
                    "prune each with random head and neuron masks, check that the masked and the "
                    "physically pruned model give the same logits, save it in Hugging Face "
                    "format, reload it and check again. Part 2 (apt): fine-tune minilm-l6 on the "
                    "offline foods reviews with full fine-tuning, LoRA + Kwon mask search "
                    "(lora-prune) and APT at 60% sparsity with a short schedule, and print "
                    "accuracy, kept parameters, training time, time to 97% of FT, measured "
                    "throughput and memory (reports under OUT/apt). "
                    "Part 3 (llm): prune smollm2-135m by ~20% "
                    "of its non-embedding parameters with Taylor (LLM-Pruner) and with RI sublayer "
                    "pruning, and print perplexity, zero-shot accuracy and measured throughput "
                    "before and after (reports under OUT/llm).",
        examples=["lmprune demo",
                  "lmprune demo --part structures --sparsity 0.5 --out runs/demo",
                  "lmprune demo --part apt train.epochs=1",
                  "lmprune demo --part llm eval.limit=50",
                  "lmprune demo --models minilm-l6 --part structures"])
    parser.add_argument("--out", default="runs/demo", help="where the pruned models are saved "
                        "(default: runs/demo)")
    parser.add_argument("--sparsity", type=float, default=0.3,
                        help="fraction of heads and of FFN neurons to remove (default 0.3)")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help="comma-separated model aliases (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--part", choices=("all", "structures", "apt", "llm"), default="all",
                        help="which part to run (default: all)")
    add_device_argument(parser)
    parser.add_argument("overrides", metavar="key=value", nargs="*",
                        help="overrides of the APT part's config (shipped `demo-apt`) with "
                             "--part apt, of the LLM part's (shipped `demo-llm`) with --part llm")
    return parser


def run(args: argparse.Namespace) -> int:
    from lmprune.device import announce, resolve_device
    from lmprune.outputs import check_output_dir

    check_output_dir(args.out)
    announce("demo", resolve_device(args.device or "auto"))
    code = 0
    if args.part in ("all", "structures"):
        code = _structures(args)
    if args.part in ("all", "apt"):
        code = max(code, _apt(args))
    if args.part in ("all", "llm"):
        code = max(code, _llm(args))
    return code


def _apt(args: argparse.Namespace) -> int:
    from lmprune.recipes.apt_demo import run_apt_demo
    from lmprune.reporting.compare import (SUMMARY_COLUMNS, format_row, format_summary,
                                           relative_accuracy_by_method, table_columns)

    overrides = device_overrides(args) + (list(args.overrides or []) if args.part == "apt" else [])
    rows = run_apt_demo(Path(args.out) / "apt", overrides)
    print()
    print_table([format_row(r) for r in rows], table_columns(rows))
    print()
    print_table(format_summary(relative_accuracy_by_method(rows)), SUMMARY_COLUMNS)
    print(f"\nreports: {Path(args.out) / 'apt'}/<run>/report.md, comparison: "
          f"{Path(args.out) / 'apt' / 'comparison.md'}")
    return 0


def _llm(args: argparse.Namespace) -> int:
    from lmprune.recipes.llm_demo import run_llm_demo

    overrides = device_overrides(args) + (list(args.overrides or []) if args.part == "llm" else [])
    rows = run_llm_demo(Path(args.out) / "llm", overrides)
    print()
    speed_columns = [(k, k.replace("bs", "THROUGHPUT BS")) for k in rows[0] if k.startswith("bs")]
    print_table(rows, [("model", "MODEL"), ("removed", "NON-EMB REMOVED"), ("ppl", "PPL AUSTEN"),
                       ("acc", "WORDNET ACC_NORM"), *speed_columns, ("report", "REPORT")])
    return 0


def _structures(args: argparse.Namespace) -> int:
    from lmprune.recipes.roundtrip import run_roundtrip

    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        print(f"[demo] {name}: loading, pruning {args.sparsity:.0%} of heads and neurons at random, "
              "saving, reloading ...", flush=True)
        r = run_roundtrip(name, Path(args.out), sparsity=args.sparsity, seed=args.seed,
                          device=args.device or "auto")
        rows.append({"model": r.model, "before": f"{r.params_before / 1e6:.2f}M",
                     "after": f"{r.params_after / 1e6:.2f}M",
                     "body": f"{r.body_before / 1e6:.2f}M -> {r.body_after / 1e6:.2f}M",
                     "diff": f"{r.masked_vs_removed:.1e}",
                     "equal": "yes" if r.equivalent else "NO", "format": r.save_format,
                     "reload": "ok" if r.reload_ok else f"FAILED ({r.reload_diff:.2e})",
                     "path": r.path, "time": f"{r.seconds:.0f}s"})
    print()
    print_table(rows, [("model", "MODEL"), ("before", "PARAMS BEFORE"), ("after", "AFTER"),
                       ("body", "NON-EMBEDDING"), ("diff", "MAX|MASKED-REMOVED| (FP64)"),
                       ("equal", "EQUAL"),
                       ("format", "SAVED AS"), ("reload", "RELOAD"), ("time", "TIME"),
                       ("path", "PATH")])
    failed = [r for r in rows if r["reload"] != "ok" or r["equal"] != "yes"]
    return 1 if failed else 0
