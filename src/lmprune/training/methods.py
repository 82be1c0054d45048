"""``train.method`` -> the phases that produce the final model (one function per method).

Each runner gets the :class:`~lmprune.training.context.TrainContext` and the freshly loaded
model, trains (adding curve points), and returns ``(final model, info)``. The final model is
merged and physically pruned; the recipe evaluates, measures and saves it.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from lmprune.training.method import LoRAMethod, TrainMethod


def _ft(ctx, model):
    cfg = ctx.config.train
    method = TrainMethod()
    model = ctx.run_phase(model, method, ctx.settings(cfg.epochs, "ft"))
    return method.finish(model), {}


def _lora(ctx, model):
    cfg = ctx.config.train
    method = LoRAMethod(cfg.lora_r, cfg.lora_alpha, ctx.family)
    model = ctx.run_phase(model, method, ctx.settings(cfg.epochs, "lora"))
    return method.finish(model), {}


def _apt(ctx, model):
    from lmprune.training.apt import APTMethod

    cfg = ctx.config.train
    settings = ctx.settings(cfg.epochs, "apt")
    apt = ctx.config.apt
    method = APTMethod(apt, keep=1.0 - cfg.sparsity, total_steps=settings.total_steps,
                       steps_per_epoch=ctx.steps_per_epoch(), task_type=ctx.task.kind,
                       seed=ctx.config.seed,
                       calibration=lambda: ctx.training_batches(apt.calibration_batches),
                       mixed_precision=settings.mixed_precision)
    model = ctx.run_phase(model, method, settings)
    model = method.finish(model)
    return model, {"apt": method.summary()}


def _dense_then_prune(dense: Callable) -> Callable:
    """A runner: the dense fine-tuning (or the ``train.init_from`` model), then Kwon pruning."""

    def run(ctx, model):
        from lmprune.training.baselines import PruneProbe, kwon_prune, probe_steps

        cfg, keep = ctx.config.train, 1.0 - ctx.config.train.sparsity
        probes = []
        if cfg.init_from is None:
            total = ctx.settings(cfg.epochs, "dense").total_steps
            steps = probe_steps(total, cfg.eval_every, ctx.config.mask_search.probes)
            if steps and ctx.dense_body:
                ctx.probe = PruneProbe(ctx, keep, steps)
            try:
                model, _ = dense(ctx, model)
            finally:
                probes, ctx.probe = (ctx.probe.log if ctx.probe else []), None
        model.to(ctx.device)
        ctx.clock.start()
        model, info = kwon_prune(model, ctx, keep=keep)
        ctx.clock.stop()
        info["probes"] = [{k: p[k] for k in ("step", "seconds", "metric", "search_seconds")}
                          for p in probes]
        return model, {"mask_search": info}

    return run


def _lora_prune_distill(ctx, model):
    import copy

    from lmprune.arch import describe
    from lmprune.training.baselines import DistilledLoRA, kwon_prune
    from lmprune.training.teacher import TeacherDistiller

    cfg = ctx.config.train
    if cfg.init_from is None:
        model, _ = _lora(ctx, model)
    model.to(ctx.device)
    teacher = copy.deepcopy(model)  # the dense LoRA-tuned model
    ctx.clock.start()
    model, info = kwon_prune(model, ctx, keep=1.0 - cfg.sparsity)
    ctx.clock.stop()
    ctx.evaluate(model, None, phase="pruned")
    distiller = TeacherDistiller(teacher, describe(model).hidden.size, temperature=2.0,
                                 pred_weight=0.1, layer_weight=0.9, seed=ctx.config.seed)
    method = DistilledLoRA(distiller, cfg.lora_r, cfg.lora_alpha, ft_weight=0.0)
    settings = ctx.settings(ctx.config.mask_search.distill_epochs, "distill")
    model = ctx.run_phase(model, method, settings)
    return method.finish(model), {"mask_search": info}


def _cofi(ctx, model):
    from lmprune.arch import describe
    from lmprune.training.cofi import CoFiMethod
    from lmprune.training.teacher import TeacherDistiller

    cfg, cofi = ctx.config.train, ctx.config.cofi
    settings = ctx.settings(cfg.epochs, "cofi")
    distiller = None
    if cfg.teacher:
        teacher = load_teacher(cfg.teacher, ctx)
        distiller = TeacherDistiller(teacher, describe(model).hidden.size,
                                     temperature=cofi.distill_temperature,
                                     pred_weight=cofi.pred_weight, layer_weight=cofi.layer_weight,
                                     seed=ctx.config.seed)
    method = CoFiMethod(cofi, cfg.sparsity, settings.total_steps, cfg.lora_r, cfg.lora_alpha,
                        distiller)
    model = ctx.run_phase(model, method, settings)
    return method.finish(model), {"cofi": method.summary()}


def load_teacher(path: str, ctx) -> nn.Module:
    """A frozen dense teacher from a run directory (its ``model/``) or a model directory."""
    from lmprune.recipes.upstream import model_dir
    from lmprune.zoo import load_model

    return load_model(str(model_dir(path, "train.teacher")), ctx.task.head).model


RUNNERS: dict[str, Callable] = {
    "ft": _ft, "lora": _lora, "apt": _apt,
    "lora-prune": _dense_then_prune(_lora), "mask-tuning": _dense_then_prune(_ft),
    "lora-prune-distill": _lora_prune_distill, "cofi": _cofi,
}
#: Methods whose final model is pruned (the others ignore train.sparsity).
PRUNING = ("apt", "lora-prune", "mask-tuning", "lora-prune-distill", "cofi")
#: Methods that can start from a fine-tuned run (train.init_from).
REUSES = {"lora-prune": "lora", "mask-tuning": "ft", "lora-prune-distill": "lora"}


def run_method(ctx, model: nn.Module) -> tuple[nn.Module, dict]:
    return RUNNERS[ctx.config.train.method](ctx, model)
