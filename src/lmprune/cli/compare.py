"""Compare training runs: relative accuracy, kept parameters, time to accuracy, speed, memory."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lmprune.cli._common import add_command, print_table


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "compare", help="compare training runs in one table",
        description="One row per run directory written by `lmprune train --out DIR`: metric, "
                    "relative accuracy (metric / the reference metric; by default the ft run "
                    "of the same model and task among the runs), kept parameters, training "
                    "time, time to 97% of the reference, measured throughput and peak training "
                    "memory; then relative accuracy per method, averaged over tasks.",
        examples=["lmprune compare runs/ft-sst2 runs/apt-sst2 runs/lora-sst2",
                  "lmprune compare runs/*-sst2 runs/*-mnli --out comparison.md",
                  "lmprune compare runs/apt-sst2 --reference runs/ft-sst2",
                  "lmprune compare runs/apt-sst2 --reference 0.931"])
    parser.add_argument("runs", metavar="RUN_DIR", nargs="+",
                        help="run directories (each with a metrics.json)")
    parser.add_argument("--reference", metavar="DIR_OR_NUMBER",
                        help="the reference metric for relative accuracy: a run directory or "
                             "a number (default: each model and task's ft run among RUN_DIRs)")
    parser.add_argument("--out", metavar="FILE.md",
                        help="also write a markdown report there, and the rows as FILE.csv")
    return parser


def parse_reference(text: str | None):
    """None, a number, or the loaded run of a directory."""
    from lmprune.reporting.compare import load_run

    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return load_run(text)


def run(args: argparse.Namespace) -> int:
    from lmprune.reporting.compare import (SUMMARY_COLUMNS, compare_runs, format_row,
                                           format_summary, load_run,
                                           relative_accuracy_by_method, table_columns,
                                           write_comparison)

    if args.out:
        from lmprune.outputs import check_output_file

        check_output_file(args.out)
    runs = [load_run(directory) for directory in args.runs]
    rows = compare_runs(runs, parse_reference(args.reference))
    print_table([format_row(r) for r in rows], table_columns(rows))
    print("\nrelative accuracy per method (mean over tasks):")
    print_table(format_summary(relative_accuracy_by_method(rows)), SUMMARY_COLUMNS, indent=2)
    if args.out:
        out = write_comparison(rows, Path(args.out))
        print(f"\nwritten: {out} and {out.with_suffix('.csv')}")
    return 0
