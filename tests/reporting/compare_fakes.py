"""Fake metrics.json contents, shaped like what `lmprune train` writes."""
from __future__ import annotations

import json
from pathlib import Path


def fake_run(method: str, task: str, metric: float, *, model: str = "m", seed: int = 0,
             **extra) -> dict:
    run = {"method": method, "model": model, "task": task, "sparsity": 0.6, "seed": seed,
           "metric_name": "accuracy", "metric": metric, "metrics": {"accuracy": metric},
           "kept_params_ratio": 1.0 if method == "ft" else 0.4, "train_seconds": 100.0,
           "curve": [{"step": 0, "seconds": 0.0, "metric": 0.5, "keep_ratio": 1.0}],
           "device": "cpu"}
    run.update(extra)
    return run


def write_run(directory: Path, run: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.json").write_text(json.dumps(run))
    return directory
