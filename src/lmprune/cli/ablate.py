"""Run a written ablation plan end to end: a reference and each variant, over seeds, one table."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lmprune.cli._common import add_command


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "ablate", help="run a written ablation plan (markdown or YAML) end to end",
        description="Read PLAN (markdown, possibly wrapped in HTML and preceded by prose, or "
                    "YAML): each section names a component of a method (`Ablated Part`), an "
                    "`Action` (REMOVE or REPLACE with `Replacement` alternatives) and "
                    "`Metrics`. Each part is matched to a registered component (`lmprune ls "
                    "components`), the method is inferred from them (--method overrides), and "
                    "the full method (the reference) and every variant run with the existing "
                    "`lmprune train` / `lmprune prune` recipes on the base config, for each "
                    "seed. Identical runs are shared across sections; an interrupted ablation "
                    "resumes from DIR without redoing finished runs. Writes DIR/results.md and "
                    "DIR/results.csv (mean ± std over seeds, delta to the reference, whether it "
                    "exceeds the seed-to-seed noise, links to each run's report) and one plot "
                    "per metric. Default base: ablate-<method> on a GPU, the cut-down "
                    "ablate-<method>-cpu schedule without one. See docs/ablation.md.",
        examples=["lmprune ablate examples/ablations/apt-components.md --dry-run",
                  "lmprune ablate examples/ablations/apt-components.md --out runs/abl-apt",
                  "lmprune ablate plan.yaml --out runs/abl --seeds 5 --base ablate-apt",
                  "lmprune ablate plan.md --out runs/abl --method sublayer-ri eval.max_windows=20",
                  "lmprune ablate plan.md --out runs/abl --jobs 3   # 3 runs at a time",
                  "lmprune ls components"])
    parser.add_argument("plan", metavar="PLAN", help="the plan: .md / .html (markdown "
                        "sections with bold fields) or .yaml")
    parser.add_argument("--out", help="output directory (required unless --dry-run); rerun "
                        "with the same --out to resume")
    parser.add_argument("--base", help="base config for every run: a YAML file or shipped "
                        "name (default: ablate-<method>, or ablate-<method>-cpu without a GPU)")
    parser.add_argument("--method", help="the method whose components the plan names "
                        "(default: inferred from the sections)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant (default 3; "
                        "the noise test needs at least 2)")
    parser.add_argument("--dry-run", action="store_true", help="print how the plan was "
                        "understood and the runs it needs; run nothing")
    parser.add_argument("--keep-models", action="store_true", help="keep each run's saved "
                        "model (deleted by default: the table needs only the metrics)")
    parser.add_argument("--jobs", type=int, default=1, help="run N (variant, seed) pairs at "
                        "a time, each in its own process on the same device (small models "
                        "leave a GPU mostly idle); the table is written when all have stopped "
                        "(default 1)")
    parser.add_argument("--shard", help=argparse.SUPPRESS)  # I/N: one worker of --jobs N
    parser.add_argument("overrides", metavar="key=value", nargs="*",
                        help="config overrides for every run (reference and variants), e.g. "
                             "train.max_steps=100")
    _intermixed(parser)
    return parser


def _intermixed(parser: argparse.ArgumentParser) -> None:
    """Let PLAN come first and key=value overrides after the options.

    Plain argparse fills both positionals at the first positional word, so overrides after
    ``--out DIR`` would be "unrecognized"; its intermixed mode parses options first. The
    subcommand action calls ``parse_known_args``; route it through the intermixed parser
    (which itself calls the plain one).
    """
    plain = parser.parse_known_args

    def parse(args=None, namespace=None):
        parser.parse_known_args = plain
        try:
            return parser.parse_known_intermixed_args(args, namespace)
        finally:
            parser.parse_known_args = parse

    parser.parse_known_args = parse


def run(args: argparse.Namespace) -> int:
    from lmprune.ablation import build_ablation, read_plan
    from lmprune.ablation.describe import understanding
    from lmprune.errors import LmpruneError

    bad = [o for o in args.overrides or [] if "=" not in o]
    if bad:
        raise LmpruneError(f"expected key=value overrides after the options, got "
                           f"{' '.join(bad)} (only one PLAN is read)")
    if not args.dry_run and not args.out:
        raise LmpruneError("--out DIR is required to run the plan (or pass --dry-run)")
    if args.jobs < 1:
        raise LmpruneError(f"--jobs must be at least 1, got {args.jobs}")
    if args.shard is not None and args.jobs != 1:
        raise LmpruneError("--shard is one worker of --jobs; pass one of them, not both")
    ablation = build_ablation(read_plan(args.plan), method=args.method, base=args.base,
                              overrides=list(args.overrides or []), seeds=args.seeds)
    if args.shard is not None:
        return _run_shard(args, ablation)
    for line in understanding(ablation):
        print(line)
    if args.dry_run:
        print("\ndry run: nothing was run")
        return 0
    from lmprune.ablation.report import summary_lines, write_results
    from lmprune.ablation.runner import Runner, prepare

    out = Path(args.out)
    print()
    if args.jobs > 1:  # the workers run the pairs; this pass only reads what they finished
        from lmprune.ablation.parallel import ablate_args, run_workers

        prepare(out, ablation)
        print(f"[ablate] {args.jobs} workers, one run at a time each (lines prefixed [job I])")
        run_workers(ablate_args(args.plan, str(out), args.seeds, args.base, args.method,
                                args.keep_models, args.overrides or []), args.jobs)
        print()
        runner = Runner(ablation, out, execute=False)
        runner.run()
        write_results(ablation, out)
    else:
        # the table is rewritten after each seed, so a stopped ablation has one for its first
        # seeds
        runner = Runner(ablation, out, keep_models=args.keep_models,
                        after_seed=lambda seed: write_results(ablation, out))
        runner.run()
    print()
    for line in summary_lines(ablation, out):
        print(line)
    print(f"results: {out / 'results.md'} and {out / 'results.csv'}")
    if runner.failures:
        print(f"error: {len(runner.failures)} run(s) failed: " + "; ".join(
            f"{v.slug} seed {s}: {m.splitlines()[0]}" for v, s, m in runner.failures)
            + " (errors in DIR/runs/*/seed*.error.txt; rerun the same command to retry them)",
            file=sys.stderr)
        return 1
    return 0


def _run_shard(args: argparse.Namespace, ablation) -> int:
    """One worker of ``--jobs N`` (:mod:`lmprune.ablation.parallel`): its share of the pairs,
    no table (the parent writes it when every worker has stopped)."""
    from lmprune.ablation.parallel import parse_shard
    from lmprune.ablation.runner import Runner

    runner = Runner(ablation, Path(args.out), keep_models=args.keep_models,
                    shard=parse_shard(args.shard))
    runner.run()
    return 1 if runner.failures else 0
