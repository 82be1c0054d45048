"""The post-training pruning workflow behind ``lmprune prune``.

load -> calibration samples -> evaluate dense -> method (scores -> masks) -> plan ->
physical removal -> evaluate pruned -> save model + plan -> metrics.json + report.md.

Everything is written to a staging directory beside ``output.dir`` and moved into place at
the end, so a failed run leaves no half-written output behind.
"""
from __future__ import annotations

import inspect
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmprune.arch import describe
from lmprune.config import dump_yaml
from lmprune.config.schema import RunConfig
from lmprune.device import announce, resolve_dtype
from lmprune.errors import LmpruneError
from lmprune import registry
from lmprune.outputs import check_output_dir, remove_stale_stages, stale_stage_note, staged_dir
from lmprune.placement import place, resolve_placement
from lmprune.pruners.settings import settings_record
from lmprune.reporting.plots import layer_widths, plot_layer_widths
from lmprune.reporting.report import write_report
from lmprune.structures import Masks, remove
from lmprune.structures.export import save_pretrained
from lmprune.structures.plan import PruningPlan

#: Extra calibration windows per method: held-out windows for objectives, a candidate pool,
#: fresh windows for AdaPruner's confirmation round.
NEEDS = {"adapruner": ("heldout", "pool", "confirm"), "sublayer-ri": ("heldout",)}


@dataclass
class PruneOutcome:
    out_dir: Path
    metrics: dict
    model: torch.nn.Module
    tokenizer: object


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_output(run: RunConfig, log=print) -> Path:
    """Check ``output.dir`` before any work: a writable directory path, empty unless
    ``output.overwrite``; staging folders of killed earlier runs there are removed."""
    out = check_output_dir(run.output.dir, "--out / output.dir")
    stale = remove_stale_stages(out)
    if stale:
        log(f"[lmprune] {stale_stage_note(stale)}")
    if out.exists() and any(out.iterdir()) and not run.output.overwrite:
        raise LmpruneError(f"output directory {out} is not empty; choose another "
                           f"(--out / output.dir=...) or pass output.overwrite=true")
    return out


staged_output = staged_dir  # a failed run leaves no half-written output (lmprune.outputs)


def calibration_for(run: RunConfig, tokenizer):
    from lmprune.data.calibration import build_calibration

    needs = NEEDS.get(run.prune.method, ())
    return build_calibration(
        tokenizer, run.data.calibration, run.data.split, run.data.num_samples, run.data.seq_len,
        run.data.seed, heldout=run.adapruner.heldout if "heldout" in needs else 0,
        pool=run.adapruner.pool_size if "pool" in needs else 0,
        confirm=run.adapruner.confirm_windows() if "confirm" in needs else 0)


def run_prune(run: RunConfig, progress: bool = True, log=print,
              dense_eval: dict | None = None) -> PruneOutcome:
    """Run the whole workflow for ``run``; returns where the results are and the metrics.

    ``dense_eval`` reuses an evaluation of the same dense model under the same ``run.eval``
    (the demo prunes one model with several methods and evaluates the dense model once).
    """
    from lmprune.evaluation.suite import evaluate
    from lmprune.zoo import load_model

    from lmprune.recipes.preflight import check_prune

    start = time.perf_counter()
    out = prepare_output(run, log)
    check_prune(run)  # names and lengths, before anything loads
    methods = registry.load_builtin_methods()  # looked up now: tests swap the registry
    method = methods.get(run.prune.method)
    placement = resolve_placement(run.device, run.placement)
    device = placement.main
    dtype = resolve_dtype(run.model.dtype, device, "inference")
    seed_everything(run.seed)
    log(f"[prune] loading {run.model.name}")
    loaded = load_model(run.model.name, run.model.task, num_labels=run.model.num_labels,
                        dtype=dtype)
    model, tokenizer = place(loaded.model, placement).eval(), loaded.tokenizer
    announce("prune", placement, dtype, log)
    if run.output.format == "decilm":
        from lmprune.structures.decilm import decilm_family_problems

        if decilm_family_problems(model):  # before any expensive work
            raise LmpruneError(f"output.format=decilm: {decilm_family_problems(model)[0]}")
    structure = describe(model)
    if tokenizer is None:
        raise LmpruneError(f"{run.model.name} has no tokenizer; calibration and evaluation need one")
    calibration = calibration_for(run, tokenizer)
    log(f"[prune] calibration: {calibration.describe()}")
    if dense_eval is None:
        log("[prune] evaluating the dense model")
        before = evaluate(model, tokenizer, run.eval, progress=progress)
    else:
        before = dense_eval
    widths_before = layer_widths(structure)
    with staged_output(out) as stage:
        log(f"[prune] method {run.prune.method}: scoring and selecting")
        t0 = time.perf_counter()
        # methods with a search (adapruner, sublayer-ri) write their history and plots here
        extra_args = {"report_dir": stage} if "report_dir" in inspect.signature(method).parameters else {}
        from lmprune.evaluation.memory import track_peak_memory

        with track_peak_memory(placement.devices) as prune_memory:
            result = method(model, structure, run, calibration, **extra_args)
        masks: Masks = result if isinstance(result, Masks) else result.masks
        plan = PruningPlan.from_masks(structure, masks, {
            "method": run.prune.method, "sparsity": run.prune.sparsity, "model": run.model.name,
            "structures": list(run.prune.structures), "seed": run.prune.seed})
        remove(model, masks, structure)
        prune_seconds = time.perf_counter() - t0
        settings = settings_record(run, structure)
        log(f"[prune] settings: {settings['summary']}")
        log("[prune] evaluating the pruned model")
        after = evaluate(model, tokenizer, run.eval, progress=progress)
        saved = save_model(model, stage / "model", tokenizer, plan, run.output.format, log)
        plots = sorted(stage.glob("*.png"))
        plots.insert(0, plot_layer_widths(widths_before, layer_widths(describe(model)),
                                          stage / "layer_widths.png",
                                          f"{run.prune.method}: kept widths"))
        if saved.unaligned:
            log(f"[prune] warning: {len(saved.unaligned)} exported width(s) are not multiples "
                f"of 8 (e.g. {saved.unaligned[0]}); prune.round_to=auto aligns them")
        memory = {"prune": prune_memory.result.as_dict()}
        if prune_memory.per_device and placement.spread:
            memory["prune_per_device"] = {d: p.as_dict()
                                          for d, p in prune_memory.per_device.items()}
        extra = {"device": placement.describe(), "dtype": str(dtype).removeprefix("torch."),
                 "alignment": {"round_to": run.prune.round_to, "unaligned": saved.unaligned}}
        metrics = _metrics(run, calibration, before, after, saved, out, prune_seconds,
                           time.perf_counter() - start,
                           {**extra, "settings": settings, "memory": memory})
        log(f"[prune] removed {metrics['params_removed_fraction']['body']:.2%} of the "
            f"non-embedding parameters (requested {run.prune.sparsity:.2%}"
            f"{'' if run.prune.budget == 'params' else ' of the units of each kind'})")
        dump_yaml(run, stage / "config.yaml")
        write_report(stage, metrics, plots)
    log(f"[prune] done: {out}/report.md")
    return PruneOutcome(out, metrics, model, tokenizer)


def save_model(model, path: Path, tokenizer, plan, format: str, log=print):
    """Save in ``format`` (output.format); a model that does not fit DeciLM is saved in the
    automatic format instead, with the reasons logged and kept in ``SaveResult.notes``."""
    if format == "decilm":
        from lmprune.structures.decilm import decilm_fit, save_decilm

        fit = decilm_fit(model)
        if fit.fits:
            return save_decilm(model, path, tokenizer=tokenizer, plan=plan)
        log("[prune] the pruned model does not fit the DeciLM format; saved in the automatic "
            "format instead:\n" + "\n".join(f"  - {p}" for p in fit.problems))
        saved = save_pretrained(model, path, tokenizer=tokenizer, plan=plan)
        saved.notes = [f"not DeciLM: {p}" for p in fit.problems]
        return saved
    return save_pretrained(model, path, tokenizer=tokenizer, plan=plan)


def _metrics(run, calibration, before, after, saved, out, prune_seconds, total, extra) -> dict:
    from lmprune.evaluation.speed import SpeedResult, speedup

    metrics = {
        "model": run.model.name, "method": run.prune.method, "sparsity": run.prune.sparsity,
        "structures": list(run.prune.structures), "calibration": calibration.describe(),
        "before": before, "after": after,
        "params_removed_fraction": {
            key: 1 - after["params"][key] / before["params"][key] for key in ("total", "body")},
        "saved": {"path": str(out / "model"), "format": saved.format, "load": saved.load_hint,
                  "notes": saved.notes},
        "seconds": {"prune": prune_seconds, "total": total},
        "protocols": {name: r["protocol"] for name, r in after.get("perplexity", {}).items()},
        **extra,
    }
    if before.get("speed") and after.get("speed"):
        as_results = [[SpeedResult(**r) for r in side["speed"]] for side in (after, before)]
        metrics["speedup"] = speedup(*as_results)
        metrics["protocols"]["speed"] = (
            "greedy generation with KV cache, random prompts; median of 3 timed runs after a "
            "warm-up; dense and pruned measured in the same process")
        labels = sorted({r.get("memory_label") or r["memory_kind"] for r in after["speed"]})
        metrics["protocols"]["memory"] = (
            "model memory MB: each model measured alone during one untimed generation at that "
            "batch size; " + "; ".join(labels))
    return metrics
