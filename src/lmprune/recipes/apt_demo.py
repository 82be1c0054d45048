"""The demo's APT part: full fine-tuning, LoRA + Kwon pruning, and APT on minilm-l6 + foods.

FT runs first and is the reference of the other two (time to 97% of FT's dev accuracy,
relative accuracy). Each run is a normal ``lmprune train`` run with its own report; the
comparison is ``lmprune compare`` over the three directories.
"""
from __future__ import annotations

from pathlib import Path

from lmprune.config import load_config

#: (run name, overrides) in order; lr per method for the short schedule (see demo-apt.yaml).
RUNS = (
    ("ft", ["train.method=ft", "train.lr=1e-4"]),
    ("lora-prune", ["train.method=lora-prune", "train.lr=2e-3"]),
    ("apt", ["train.method=apt", "train.lr=2e-3"]),
)


def run_apt_demo(out_dir: Path, overrides: list[str] | None = None, log=print) -> list[dict]:
    """Train the three runs; returns the comparison rows (``lmprune.reporting.compare``)."""
    from lmprune.recipes.train import run_train
    from lmprune.reporting.compare import compare_runs, load_run, write_comparison

    out_dir = Path(out_dir)
    dirs, dense = [], None
    for name, extra in RUNS:
        reference = [f"train.reference={out_dir / 'ft'}"] if dirs else []
        run = load_config("demo-apt", [*extra, *reference, f"output.dir={out_dir / name}",
                                       "output.overwrite=true", "train.progress=false",
                                       *(overrides or [])])
        log(f"[demo] {name}: training {run.model.name} on {run.train.task}"
            + (f" at sparsity {run.train.sparsity}" if name != "ft" else ""))
        outcome = run_train(run, log=lambda *_: None, dense_inference=dense)
        m = outcome.metrics
        dense = m.get("dense_inference")  # the same dense model: measured once
        log(f"[demo]   dev {m['metric_name']} {m['metric']:.4f}, kept "
            f"{m['kept_params_ratio']:.1%} of the body, {m['train_seconds']:.0f} s")
        dirs.append(outcome.out_dir)
    rows = compare_runs([load_run(d) for d in dirs])
    write_comparison(rows, out_dir / "comparison.md")
    return rows
