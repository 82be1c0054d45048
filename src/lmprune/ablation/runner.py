"""Run an :class:`~.expand.Ablation`: the existing recipes, once per variant and seed, resumable.

Layout of the output directory::

    DIR/ablation.json             what was asked (plan, method, base, variants, seeds)
    DIR/plan.md                   a copy of the plan
    DIR/runs/<variant>/seed<s>/   one recipe run each: metrics.json, report.md, config.yaml
    DIR/results.md, results.csv   the table (written by :mod:`.results`)
    DIR/<metric>.png              one plot per metric

Runs go seed by seed (every variant at the first seed, then the next seed), and the table is
rewritten after each seed (marked partial until the end), so an interrupted ablation already
has a whole table for its first seeds. A run is finished when
its ``metrics.json`` exists: the recipes write into a staging directory and move it into
place only on success, so a finished run is complete and is never redone; an interrupted one
left nothing (or a stale staging directory, removed here) and restarts cleanly. A finished
run whose saved config differs from the one this plan would run is an error naming the
fields, not silently reused. A run that fails is recorded (``seed<s>.error.txt`` beside its
directory, listed in results.md) and the others go on; the next invocation retries it. Saved
models are deleted after each run (the table needs only the metrics) unless ``keep_models``.
"""
from __future__ import annotations

import json
import os
import shutil
import traceback
from pathlib import Path

import yaml

from lmprune.ablation.expand import Ablation, Variant, plan_copy_name
from lmprune.errors import LmpruneError

MARKER = "ablation.json"


def run_dir(out: Path, variant: Variant, seed: int) -> Path:
    return out / "runs" / variant.slug / f"seed{seed}"


def prepare(out: Path, ablation: Ablation) -> None:
    """Create ``out`` (or check it is an ablation directory) and record the request."""
    if out.exists() and not out.is_dir():
        raise LmpruneError(f"--out {out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise LmpruneError(f"--out {out} is not empty and holds no {MARKER}: not an ablation "
                           f"directory to resume; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    if ablation.plan_source and Path(ablation.plan_source).is_file():
        copy = out / plan_copy_name(ablation.plan_source)
        if copy.resolve() != Path(ablation.plan_source).resolve():
            _replace(copy, Path(ablation.plan_source).read_bytes())
    record = {
        "plan": ablation.plan_source, "method": ablation.table.name,
        "recipe": ablation.recipe, "base": ablation.base, "overrides": ablation.overrides,
        "seeds": ablation.seeds, "metrics": ablation.metrics,
        "quantities": ablation.quantities,
        "variants": [{"slug": v.slug, "labels": v.labels, "sections": v.sections,
                      "overrides": v.overrides} for v in ablation.all_variants()],
        "identical_to_reference": ablation.same_as_reference,
    }
    _replace(out / MARKER, (json.dumps(record, indent=2) + "\n").encode("utf-8"))


def _replace(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (parallel workers write the same files at once)."""
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_bytes(data)
    os.replace(staging, path)


def run_overrides(ablation: Ablation, variant: Variant, seed: int, directory: Path) -> list[str]:
    seeds = [f"{name}={seed}" for name in ablation.table.seed_fields]
    return [ablation.table.method_override, *ablation.overrides, *variant.overrides, *seeds,
            f"output.dir={directory}", "output.overwrite=true"]


def _flat(data, prefix: str = "") -> dict:
    if not isinstance(data, dict):
        return {prefix: data}
    out = {}
    for k, v in data.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_difference(saved: Path, config) -> list[str]:
    """Fields (except output.*) where a finished run's config.yaml differs from ``config``.

    Fields only one side has (added to the schema since the run) are not compared.
    """
    from lmprune.config import dumps_yaml

    old = _flat(yaml.safe_load(saved.read_text(encoding="utf-8")) or {})
    new = _flat(yaml.safe_load(dumps_yaml(config)))
    keys = sorted(k for k in set(old) & set(new) if not k.startswith("output."))
    return [f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in keys
            if old.get(k) != new.get(k)]


def is_finished(directory: Path) -> bool:
    return (directory / "metrics.json").is_file()


def failure_file(directory: Path) -> Path:
    """Where a failed run's error is kept (removed when the run is retried)."""
    return directory.with_name(directory.name + ".error.txt")


def _clean(directory: Path) -> None:
    """Remove what an interrupted run may have left: the directory, stale staging dirs."""
    if directory.exists():
        shutil.rmtree(directory)
    for stale in directory.parent.glob(f".{directory.name}.*"):
        shutil.rmtree(stale, ignore_errors=True)


class Runner:
    """Runs every (variant, seed) of an ablation that is not finished yet."""

    def __init__(self, ablation: Ablation, out: Path, log=print, keep_models: bool = False,
                 progress: bool = True, after_seed=None, shard: tuple[int, int] | None = None,
                 execute: bool = True):
        self.ablation, self.out, self.log = ablation, Path(out), log
        self.keep_models, self.progress = keep_models, progress
        self.after_seed = after_seed  # called after every variant ran at a seed (partial tables)
        # ``shard=(i, n)``: only the pairs whose place in the run order is i modulo n (one of n
        # worker processes, :mod:`lmprune.ablation.parallel`); ``execute=False``: run nothing,
        # report the unfinished pairs as failures (the pass after the workers)
        self.shard, self.execute = shard, execute
        self.failures: list[tuple[Variant, int, str]] = []
        self.dense: dict[str, dict] = {}  # dense measurements reused within this process

    def run(self) -> list[tuple[Variant, int, Path]]:
        prepare(self.out, self.ablation)
        variants = self.ablation.all_variants()
        n = len(variants)
        done, place = [], -1
        for seed in self.ablation.seeds:
            for i, variant in enumerate(variants, 1):
                place += 1
                if self.shard is not None and place % self.shard[1] != self.shard[0]:
                    continue
                directory = run_dir(self.out, variant, seed)
                config = self._config(variant, seed, directory)
                line = f"[ablate] variant {i}/{n} ({variant.slug}, seed {seed})"
                if is_finished(directory):
                    self._check_same(directory, config, variant, seed)
                    self.log(f"{line}: finished before, reused")
                elif not self.execute:
                    self._unfinished(directory, variant, seed)
                    continue
                else:
                    self.log(f"{line}: {variant.label}")
                    if not self._attempt(config, directory, variant, seed):
                        continue
                done.append((variant, seed, directory))
            if self.after_seed is not None:
                self.after_seed(seed)
        return done

    def _unfinished(self, directory: Path, variant: Variant, seed: int) -> None:
        """A pair a worker did not finish: its recorded error, or that it did not run."""
        error = failure_file(directory)
        message = error.read_text(encoding="utf-8").split("\n\n")[0] if error.is_file() \
            else "did not run (its worker stopped first)"
        self.log(f"[ablate]   NOT FINISHED ({variant.slug}, seed {seed}): {message}")
        self.failures.append((variant, seed, message))

    def _attempt(self, config, directory: Path, variant: Variant, seed: int) -> bool:
        """One run; a failure is recorded (``seed<s>.error.txt``) and the others go on."""
        _clean(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        error_file = failure_file(directory)
        error_file.unlink(missing_ok=True)
        try:
            run_one(self, config)
        except Exception as exc:  # noqa: BLE001 - one broken variant must not stop the rest
            message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, LmpruneError) \
                else str(exc)
            error_file.write_text(message + "\n\n" + traceback.format_exc(), encoding="utf-8")
            self.log(f"[ablate]   FAILED ({variant.slug}, seed {seed}): {message.splitlines()[0]}")
            self.failures.append((variant, seed, message))
            return False
        if not self.keep_models:
            shutil.rmtree(directory / "model", ignore_errors=True)
        return True

    def _config(self, variant: Variant, seed: int, directory: Path):
        from lmprune.config import load_config

        return load_config(self.ablation.base,
                           run_overrides(self.ablation, variant, seed, directory))

    def _check_same(self, directory: Path, config, variant: Variant, seed: int) -> None:
        saved = directory / "config.yaml"
        if not saved.is_file():
            return
        diff = config_difference(saved, self._as_run(config))
        if diff:
            raise LmpruneError(
                f"{directory} is a finished run of {variant.slug} (seed {seed}) made with a "
                f"different config than this plan now asks for ({'; '.join(diff[:5])}); use "
                f"another --out, or delete that run directory to redo it")

    def _as_run(self, config):
        """``config`` as the recipe runs and saves it: ``lmprune train`` cuts its lengths to
        the model's positions (:func:`lmprune.recipes.preflight.fit_train_lengths`)."""
        if self.ablation.recipe != "train":
            return config
        from lmprune.recipes.preflight import fit_train_lengths
        from lmprune.recipes.upstream import source_model

        try:
            return fit_train_lengths(config, source_model(config), log=lambda message: None)
        except LmpruneError:  # an upstream run not there yet: compare as asked
            return config

    def dense_key(self, config) -> str:
        m = config.model
        if self.ablation.recipe == "train":
            t = config.train
            parts = (m.name, m.dtype, t.task, t.measure_batch_sizes, t.measure_seq_len,
                     t.measure_seconds)
        else:
            from lmprune.config import to_dict

            parts = (m.name, m.dtype, m.task, to_dict(config.eval))
        return json.dumps(parts, default=str)


def run_one(runner: Runner, config) -> dict:
    """One recipe run; returns its metrics. Dense measurements are shared within a process."""
    key = runner.dense_key(config)
    log = lambda message: runner.log("    " + message)  # noqa: E731
    if runner.ablation.recipe == "train":
        from lmprune.recipes.train import run_train

        outcome = run_train(config, log=log, dense_inference=runner.dense.get(key))
        if outcome.metrics.get("dense_inference"):
            runner.dense.setdefault(key, outcome.metrics["dense_inference"])
        return outcome.metrics
    from lmprune.recipes.prune import run_prune

    outcome = run_prune(config, progress=runner.progress, log=log,
                        dense_eval=runner.dense.get(key))
    runner.dense.setdefault(key, outcome.metrics["before"])
    return outcome.metrics
