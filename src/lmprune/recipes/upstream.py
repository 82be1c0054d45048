"""Runs a training run builds on, counted as stages of its pipeline.

A run that starts from another run's model (``train.init_from``: lora-prune and
lora-prune-distill from a lora run, mask-tuning from an ft run) or distils from another run's
fine-tuned model (``train.teacher``: CoFi's FT teacher) could not exist without that run, so
its training time includes theirs (time to accuracy counts every stage the same way for every
method) and its memory is reported twice: the peak of its own stage and the peak of the whole
pipeline (the largest over its own stage and every upstream run, recursively, since each run
records its own pipeline peak).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from lmprune.errors import LmpruneError

#: Methods whose ``train.teacher`` is a stage of their pipeline (lmprune.training.methods).
TEACHER_METHODS = ("cofi",)


@dataclass
class Upstream:
    role: str  # "init_from" or "teacher"
    run: str  # the run directory
    train_seconds: float  # its whole pipeline's training time (its own upstream included)
    memory: dict | None  # its pipeline's peak training memory ({"mb", "kind", "label"})

    def as_dict(self) -> dict:
        return asdict(self)


def _metrics(directory: Path) -> dict | None:
    path = directory / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _stage(role: str, value: str | None) -> Upstream | None:
    if value is None:
        return None
    directory = Path(value)
    metrics = _metrics(directory)
    if metrics is None:  # a bare model directory: nothing known about how it was trained
        return None
    memory = metrics.get("memory") or {}
    return Upstream(role, str(directory), float(metrics["train_seconds"]),
                    memory.get("pipeline") or memory.get("train"))


def upstream_runs(run) -> list[Upstream]:
    """The run directories ``run`` builds on (``train.init_from``; ``train.teacher`` for the
    methods that distil from it), each once."""
    cfg = run.train
    stages = [_stage("init_from", cfg.init_from)]
    if cfg.method in TEACHER_METHODS:
        stages.append(_stage("teacher", cfg.teacher))
    unique: dict[str, Upstream] = {}
    for stage in stages:
        if stage is not None:
            unique.setdefault(str(Path(stage.run).resolve()), stage)
    return list(unique.values())


def model_dir(value: str, option: str) -> Path:
    """The model directory of a run directory (its ``model/``) or a model directory itself,
    else an error naming the ``option`` that gave ``value``."""
    directory = Path(value)
    if (directory / "model").is_dir():
        directory = directory / "model"
    if not directory.is_dir():
        raise LmpruneError(f"{option}={value!r} is neither a run directory with a saved model "
                           f"nor a model directory")
    return directory


def source_model(run) -> str:
    """The model to start from: ``train.init_from``'s saved model, or ``model.name``."""
    init = run.train.init_from
    return run.model.name if init is None else str(model_dir(init, "train.init_from"))


def pipeline_memory(own: dict | None, upstream: list[Upstream]) -> dict | None:
    """The largest peak over ``own`` and the upstream runs' pipelines, when every one was
    measured the same way (a GPU peak and a CPU RSS peak do not compare); else None."""
    peaks = [own] + [u.memory for u in upstream]
    if any(p is None for p in peaks) or len({p["kind"] for p in peaks}) != 1:
        return None
    return dict(max(peaks, key=lambda p: p["mb"]))


def resolve_reference(reference: str | None) -> float | None:
    """A number, or a run directory whose dev metric is the reference; None if unset."""
    if reference is None:
        return None
    try:
        return float(reference)
    except ValueError:
        pass
    path = Path(reference) / "metrics.json"
    if not path.is_file():
        raise LmpruneError(f"train.reference={reference!r} is neither a number nor a run "
                           f"directory with metrics.json; give the --out of a finished ft run "
                           f"or its dev metric, e.g. --reference 0.91")
    return float(json.loads(path.read_text())["metric"])
