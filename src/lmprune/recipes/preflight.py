"""Checks of a run's inputs made before anything expensive (model load, training, evaluation).

A name typo or an impossible length should cost the user a second, not a model load, a
training run or an evaluation. (The exceptions: an unknown zero-shot task name reads lm-eval's
task index once per lm-eval version, and a real model alias's config may need its one-time
conversion.) Each check is a config field and a function that raises
:class:`LmpruneError`; the ``*_problems`` functions run a set of them and return every message
as ``"<field>: <what is wrong and the fix>"``, and :func:`raise_problems` raises them (one: a
one-line :class:`LmpruneError`; several: one :class:`ConfigError` listing all).
``lmprune validate`` runs :func:`name_problems` (every name and path a command would reject);
``prune``, ``train``, ``eval`` and ``recover`` run their own set first.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from lmprune.errors import ConfigError, LmpruneError

Check = tuple[str, Callable[[], None]]  # (config field, a function raising LmpruneError)


def raise_problems(problems: list[str]) -> None:
    if len(problems) == 1:
        raise LmpruneError(problems[0])
    if problems:
        raise ConfigError(problems)


def collect(*checks: Check) -> list[str]:
    """The messages of the checks that fail, each starting with its field."""
    problems = []
    for field, check in checks:
        try:
            check()
        except LmpruneError as e:
            message = str(e)
            problems.append(message if message.startswith(field) else f"{field}: {message}")
    return problems


def dataset(field: str, name: str, kind: str | None = None) -> Check:
    def check() -> None:
        from lmprune.data import dataset_info

        found = dataset_info(name).kind
        if kind is not None and found != kind:
            raise LmpruneError(f"{name!r} holds {found} data; {field} needs a {kind} dataset "
                               "(`lmprune ls datasets`)")
    return field, check


def model(name: str, field: str = "model.name") -> Check:
    from lmprune.zoo.loading import check_model_name

    return field, lambda: check_model_name(name)


def tasks(field: str, names: list[str]) -> Check:
    from lmprune.evaluation.zeroshot import check_tasks

    return field, lambda: check_tasks(list(names))


def run_dir(field: str, path: str | None) -> Check:
    """``path`` (if set) must be a run directory with a saved model, or a model directory."""
    def check() -> None:
        directory = Path(path)
        if not (directory / "model").is_dir() and not (directory / "config.json").is_file():
            raise LmpruneError(f"{path!r} is neither a run directory (with model/) nor a saved "
                               "model directory; give the --out of an earlier run")
    return field, (check if path is not None else lambda: None)


def reference(value: str | None) -> Check:
    from lmprune.recipes.upstream import resolve_reference

    return "train.reference", lambda: resolve_reference(value)


def instruction_data(name: str, field: str = "recovery.data") -> Check:
    from lmprune.recovery.instruct_data import check_instruction_source

    return field, lambda: check_instruction_source(name)


def eval_checks(run) -> list[Check]:
    """The ``eval`` section's names: perplexity datasets and zero-shot tasks."""
    return [*(dataset("eval.perplexity", n, "text") for n in run.eval.perplexity),
            tasks("eval.zero_shot", run.eval.zero_shot)]


def train_checks(run) -> list[Check]:
    train = run.train
    return [dataset("train.task", train.task), reference(train.reference),
            run_dir("train.init_from", train.init_from), run_dir("train.teacher", train.teacher)]


def name_problems(run) -> list[str]:
    """Every name and path of a config that some command would reject (``lmprune validate``)."""
    return collect(model(run.model.name), dataset("data.calibration", run.data.calibration, "text"),
                   *train_checks(run), instruction_data(run.recovery.data), *eval_checks(run))


def model_positions(name: str) -> int | None:
    from lmprune.zoo.loading import max_positions, model_config

    return max_positions(model_config(name))


def length_problems(run, positions: int | None, model_name: str, *,
                    calibration: bool = True) -> list[str]:
    """Token lengths of the prune/eval protocols that the model's positions cannot hold."""
    if positions is None:
        return []
    fix = f"use at most {positions} ({model_name} has {positions} positions)"
    problems = []
    if calibration and run.data.seq_len > positions:
        problems.append(f"data.seq_len: {run.data.seq_len} calibration tokens per sample; {fix}")
    if run.eval.perplexity and run.eval.seq_len > positions:
        problems.append(f"eval.seq_len: perplexity windows of {run.eval.seq_len} tokens; {fix}")
    generated = run.eval.prompt_len + run.eval.new_tokens
    if run.eval.speed and generated > positions:
        problems.append(f"eval.prompt_len + eval.new_tokens: the speed measurement needs "
                        f"{generated} positions; {fix}")
    return problems


def check_prune(run) -> None:
    """Everything ``lmprune prune`` can check before it loads the model."""
    problems = collect(model(run.model.name),
                       dataset("data.calibration", run.data.calibration, "text"),
                       *eval_checks(run))
    raise_problems(problems or length_problems(run, model_positions(run.model.name),
                                               run.model.name))


def check_eval(run, model_name: str) -> None:
    """Everything ``lmprune eval`` can check before it loads the model."""
    problems = collect(model(model_name, "--model"), *eval_checks(run))
    raise_problems(problems or length_problems(run, model_positions(model_name), model_name,
                                               calibration=False))


def check_train(run) -> None:
    """Everything ``lmprune train`` can check before it loads the model and the data."""
    raise_problems(collect(model(run.model.name), *train_checks(run)))


def fit_train_lengths(run, source: str, log=print):
    """``run`` with ``train.max_len`` and ``train.measure_seq_len`` cut to the positions of
    the model ``source`` (saying so): inputs are truncated to max_len anyway, and measuring on
    sequences the model cannot take would fail after the whole training."""
    positions = model_positions(source)
    if positions is None:
        return run
    changes = {key: positions for key in ("max_len", "measure_seq_len")
               if getattr(run.train, key) > positions}
    for key in changes:
        log(f"[train] train.{key}={getattr(run.train, key)} is more than {run.model.name}'s "
            f"{positions} positions: using {positions}")
    if not changes:
        return run
    return dataclasses.replace(run, train=dataclasses.replace(run.train, **changes))
