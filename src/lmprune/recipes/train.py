"""The fine-tuning workflow behind ``lmprune train`` (APT and its baselines).

load model + task -> encode splits -> dense measurements -> method phases (training curve on
the dev split, training clock) -> final model (merged, pruned) -> dev/test metrics, kept
parameters, inference throughput/latency/memory, time-to-accuracy -> model + metrics.json +
report.md with plots.

Everything is written to a staging directory beside ``output.dir`` and moved into place at the
end, so a failed run leaves no half-written output behind. Training state is checkpointed
into ``DIR.partial`` after every evaluation; rerunning with the same ``--out`` resumes a killed
run (:mod:`lmprune.training.checkpoint`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lmprune.arch import describe
from lmprune.config import dump_yaml
from lmprune.errors import LmpruneError
from lmprune.device import (accelerator_kwargs, announce, describe_device, resolve_device,
                             resolve_dtype)
from lmprune.recipes.prune import prepare_output, seed_everything, staged_output
from lmprune.recipes.upstream import (pipeline_memory, resolve_reference, source_model,
                                      upstream_runs)
from lmprune.structures.counting import count_parameters


@dataclass
class TrainOutcome:
    out_dir: Path
    metrics: dict


def model_family(name: str) -> str:
    """The ``model_type`` of a model alias, directory or hub id, without loading weights."""
    from lmprune.zoo.registry import get_info, is_alias

    if is_alias(name):
        return get_info(name).family
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name).model_type
    except (OSError, ValueError) as e:
        raise LmpruneError(f"cannot read the config of model {name!r}: {e}") from e


def run_train(run, log=print, dense_inference: dict | None = None) -> TrainOutcome:
    """Run ``lmprune train`` for the validated :class:`~lmprune.config.RunConfig` ``run``.

    ``dense_inference`` reuses a measurement of the same dense model under the same
    ``train.measure_*`` settings (the demo trains one model with several methods).
    """
    from accelerate import Accelerator

    from lmprune.evaluation.memory import track_peak_memory
    from lmprune.tasks import load_task
    from lmprune.training.context import TrainContext
    from lmprune.training.methods import PRUNING, REUSES, run_method
    from lmprune.zoo import load_model

    from lmprune.recipes.preflight import check_train, fit_train_lengths

    cfg = run.train
    if cfg.init_from is not None and cfg.method not in REUSES:
        raise LmpruneError(f"train.init_from works with {', '.join(REUSES)}, not {cfg.method}")
    from lmprune.config.loader import to_dict
    from lmprune.training.checkpoint import TrainCheckpoints

    from lmprune.training.loop import data_parallel

    started = time.perf_counter()
    accelerator = Accelerator(**accelerator_kwargs(run.device))
    dp = data_parallel(accelerator)
    if dp.active:
        check_data_parallel(run)
    if not dp.is_main:
        log = _quiet
    out = prepare_output(run, log) if dp.is_main else Path(run.output.dir)
    check_train(run)  # names and paths, before anything loads
    device = resolve_device(run.device)
    dtype = resolve_dtype(run.model.dtype, device, "training")
    if (cfg.mixed_precision == "bf16" and device.type == "cuda"
            and not torch.cuda.is_bf16_supported()):
        raise LmpruneError(f"train.mixed_precision=bf16: the GPU {device} has no bfloat16 "
                           "support; use train.mixed_precision=no")
    seed_everything(run.seed)
    family = model_family(run.model.name)
    task = load_task(cfg.task, family, data_files=cfg.data_files)
    source, upstream = source_model(run), upstream_runs(run)
    run = fit_train_lengths(run, source, log)
    cfg = run.train
    checkpoints = TrainCheckpoints(out, to_dict(run))  # the config as run (lengths fitted)
    if dp.is_main and checkpoints.open(resume=cfg.resume):
        log(f"[train] resuming the killed run kept in {checkpoints.dir}")
    dp.barrier()  # the others read the checkpoints process 0 kept
    if dp.active:
        log(f"[train] data parallel over {dp.world} processes: global batch "
            f"{cfg.batch_size}, about {-(-cfg.batch_size // dp.world)} rows each")
    log(f"[train] {cfg.method} on {run.model.name} / {cfg.task} ({task.kind}, metric "
        f"{task.metric}), sparsity {cfg.sparsity if cfg.method in PRUNING else 0}")
    loaded = load_model(source, task.head, num_labels=task.num_labels or None,
                        dtype=dtype, seed=run.seed)
    model, tokenizer = loaded.model, loaded.tokenizer
    if tokenizer is None:
        raise LmpruneError(f"{run.model.name} has no tokenizer; training needs one")
    task.prepare_model(model, tokenizer)
    if cfg.gradient_checkpointing:
        from lmprune.training.recompute import require_recompute

        require_recompute(model)  # before any training phase
    train = task.encode(tokenizer, "train", cfg.max_len, cfg.max_train_samples, run.seed)
    dev = task.encode(tokenizer, cfg.eval_split, cfg.max_len, cfg.max_eval_samples, run.seed)
    model.to(accelerator.device)
    announce("train", accelerator.device, dtype, log)
    if cfg.mixed_precision != "no":
        log(f"[train] training forwards under {cfg.mixed_precision} autocast (weights, "
            f"gradients and optimizer state stay {str(dtype).replace('torch.', '')})")
    if cfg.gradient_checkpointing:
        log("[train] gradient checkpointing: each layer's activations are recomputed in "
            "backward instead of kept")
    ctx = TrainContext(run, task, tokenizer, train, dev, accelerator, family,
                       extra_seconds=sum(u.train_seconds for u in upstream),
                       checkpoints=checkpoints)
    dense = count_parameters(model)
    ctx.dense_body = dense.body
    if cfg.measure and dense_inference is None:
        dense_inference = _measure(model, run, log, "dense")
    log(f"[train] {len(train)} training and {len(dev)} dev features; dense dev "
        f"{task.metric} before training:")
    ctx.evaluate(model, None, phase="start")
    log(f"[train]   {ctx.curve[-1]['metric']:.4f}")
    if not dp.is_main:  # trains in step with process 0, which measures and writes
        run_method(ctx, model)
        dp.barrier()
        return TrainOutcome(out, None)
    with staged_output(out) as stage:
        with track_peak_memory(accelerator.device) as train_memory:
            model, info = run_method(ctx, model)
        model.to(accelerator.device).eval()
        after = count_parameters(model, describe(model))
        keep_body = after.body / dense.body
        dev_metrics = ctx.evaluate(model, None, phase="final")
        ctx.curve[-1]["keep_ratio"] = round(keep_body, 4)
        log(f"[train] final dev {task.metric} {dev_metrics[task.metric]:.4f}, kept "
            f"{keep_body:.1%} of the body, trained {ctx.seconds:.1f} s")
        test_metrics = _test(task, tokenizer, model, cfg, run.seed, accelerator.device, log)
        inference = _measure(model, run, log, "final") if cfg.measure else None
        saved = None
        if cfg.save_model:
            from lmprune.structures.export import save_pretrained

            saved = save_pretrained(model, stage / "model", tokenizer=tokenizer).format
        metrics = _metrics(run, task, ctx, dense, after, dev_metrics, test_metrics, inference,
                           dense_inference, train_memory.result, info, saved, upstream)
        metrics["wall_seconds"] = round(time.perf_counter() - started, 1)
        dump_yaml(run, stage / "config.yaml")
        from lmprune.reporting.train_report import write_train_report

        write_train_report(stage, metrics)
    dp.barrier()  # every process has finished training before the checkpoints go
    checkpoints.close()
    log(f"[train] done: {out}/report.md")
    return TrainOutcome(out, metrics)


#: methods whose data-parallel run takes the same steps and decisions as one process
DATA_PARALLEL = ("apt", "ft", "lora", "lora-prune", "mask-tuning", "lora-prune-distill",
                 "cofi")


def check_data_parallel(run) -> None:
    """Refuse, before any work, a launched run that data parallelism would not keep exact."""
    method = run.train.method
    if method not in DATA_PARALLEL:
        raise LmpruneError(f"train.method={method} does not run data parallel yet (it runs "
                           f"in one process: drop --num-gpus); data parallel: "
                           f"{', '.join(DATA_PARALLEL)}")


def _quiet(*args, **kwargs) -> None:
    """The log of a process other than the first: process 0 speaks for the run."""


def _test(task, tokenizer, model, cfg, seed, device, log) -> dict | None:
    if cfg.test_split is None:
        return None
    try:
        split = task.encode(tokenizer, cfg.test_split, cfg.max_len, cfg.max_eval_samples, seed)
    except (LmpruneError, KeyError, ValueError) as e:
        log(f"[train] no {cfg.test_split!r} split evaluated ({e})")
        return None
    return task.evaluate(model, split, cfg.eval_batch_size, device)


def _measure(model, run, log, what: str) -> dict:
    from lmprune.evaluation.efficiency import measure_inference

    cfg = run.train
    log(f"[train] measuring {what} inference at batch sizes {cfg.measure_batch_sizes}, "
        f"sequence {cfg.measure_seq_len}")
    vocab = getattr(model.config, "vocab_size", None)
    # a GPU forward of a small model takes milliseconds: many repeats for a stable median
    cuda = next(model.parameters()).is_cuda
    return measure_inference(model, batch_sizes=tuple(cfg.measure_batch_sizes),
                             seq_len=cfg.measure_seq_len, vocab_size=vocab,
                             warmup=10 if cuda else 2, repeats=50 if cuda else 5,
                             max_seconds=cfg.measure_seconds)


def _metrics(run, task, ctx, dense, after, dev, test, inference, dense_inference, memory, info,
             saved, upstream) -> dict:
    from lmprune.evaluation.efficiency import at_final_sparsity, time_to_accuracy
    from lmprune.training.methods import PRUNING

    cfg = run.train
    reference = resolve_reference(cfg.reference)
    at_target = at_final_sparsity(ctx.curve)
    tta = None
    if reference is not None:
        tta = {"reference": reference, "fraction": 0.97, "target": 0.97 * reference,
               "seconds": time_to_accuracy(at_target, reference, 0.97)}
    with_emb = (after.total - after.heads) / max(1, dense.total - dense.heads)
    own_memory = memory.as_dict() if memory else None
    return {
        "method": cfg.method, "model": run.model.name, "task": cfg.task, "kind": task.kind,
        "sparsity": cfg.sparsity if cfg.method in PRUNING else 0.0, "seed": run.seed,
        "metric_name": task.metric, "metric": float(dev[task.metric]), "metrics": dev,
        "test_metrics": test,
        "params": {"dense": dense.total, "kept": after.total, "dense_body": dense.body,
                   "kept_body": after.body, "dense_embeddings": dense.embeddings,
                   "kept_embeddings": after.embeddings},
        "kept_params_ratio": after.body / dense.body,
        "kept_params_ratio_with_embeddings": with_emb,
        "train_seconds": round(ctx.seconds, 3), "steps": ctx.steps_done,
        "own_train_seconds": round(ctx.clock.seconds, 3),
        "upstream": [u.as_dict() for u in upstream],
        "curve": ctx.curve, "time_to_accuracy": tta,
        "training_cost": {"series": ctx.costs, "events": ctx.events},
        "inference": inference, "dense_inference": dense_inference,
        "memory": {"train": own_memory,
                   "pipeline": pipeline_memory(own_memory, upstream) if upstream else own_memory,
                   "inference": _inference_memory(inference)},
        "device": describe_device(ctx.device),
        "phases": ctx.phases, "info": info, "saved_format": saved,
        "config": {"lr": cfg.learning_rate(run.apt.adapter, run.apt.backbone_lr), "epochs": cfg.epochs,
                   "batch_size": cfg.batch_size,
                   "max_len": cfg.max_len, "max_train_samples": cfg.max_train_samples,
                   "mixed_precision": cfg.mixed_precision},
    }


def _inference_memory(inference: dict | None) -> dict | None:
    if not inference:
        return None
    sizes = [k for k in inference if k.isdigit()]
    return inference[max(sizes, key=int)].get("peak_memory") if sizes else None

