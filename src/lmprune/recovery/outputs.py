"""What a recovery run writes to ``OUT``, and the rule that nothing is half-written there.

While training, ``OUT`` holds only ``checkpoints/``. At the end, the merged model
(``structures.export.save_pretrained``), ``recovery.json`` and ``loss_curve.png`` are written
to a hidden staging directory beside ``OUT``; the checkpoints are moved into it and it is
renamed to ``OUT`` last. A failure before that leaves ``OUT`` as it was (checkpoints
included, so ``--resume`` still works).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from lmprune.errors import LmpruneError
from lmprune.recovery.checkpoint import CHECKPOINTS, checkpoint_dir, latest_checkpoint

REPORT = "recovery.json"
PLOT = "loss_curve.png"
SMOOTHING = 20  # steps in the moving average drawn over the raw loss


def check_output(out: Path, *, resume: bool, overwrite: bool) -> Path | None:
    """What :func:`prepare_output` will do, decided without changing anything (so it can run
    before the model loads): the checkpoint to resume from, None to start from scratch, or an
    :class:`LmpruneError` saying why ``out`` cannot be used.
    """
    from lmprune.outputs import check_output_dir

    out = check_output_dir(out, "--out")
    if not out.exists():
        return None
    others = sorted(p.name for p in out.iterdir() if p.name != CHECKPOINTS)
    checkpoint = latest_checkpoint(out)
    if (out / REPORT).exists() and resume:
        raise LmpruneError(f"{out} holds a finished recovery run ({REPORT}); nothing to resume. "
                           "Choose another --out, or drop --resume and set "
                           "output.overwrite=true to train again")
    if resume and (not others or overwrite):
        return checkpoint
    if overwrite or (not others and checkpoint is None):  # empty, or leftovers of a write
        return None
    if checkpoint is not None and not others:
        raise LmpruneError(f"{out} holds checkpoints of an unfinished run ({checkpoint.name}):"
                           " add --resume to continue it, or set output.overwrite=true to "
                           "start over")
    raise LmpruneError(f"{out} already exists and is not empty ({', '.join(others[:5])}); "
                       "choose another --out or set output.overwrite=true to replace it")


def prepare_output(out: Path, *, resume: bool, overwrite: bool,
                   is_main: bool = True) -> Path | None:
    """Check ``out`` before training; returns the checkpoint to resume from, if any.

    ``resume`` continues from ``out/checkpoints`` (and starts from scratch when there are
    none). Otherwise ``out`` must be empty or absent unless ``overwrite``, in which case stale
    checkpoints are deleted now and the rest of ``out`` is replaced when the run succeeds.
    Staging folders of killed earlier runs beside ``out`` are removed.
    """
    from lmprune.outputs import remove_stale_stages

    out = Path(out)
    checkpoint = check_output(out, resume=resume, overwrite=overwrite)
    if is_main:
        remove_stale_stages(out)
        if not resume:
            shutil.rmtree(checkpoint_dir(out), ignore_errors=True)
    return checkpoint


def plot_losses(losses: list[float], path: Path, title: str = "LoRA recovery") -> Path:
    """Loss per optimizer step (and its moving average) as a PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    ax = fig.add_subplot()
    steps = list(range(1, len(losses) + 1))
    ax.plot(steps, losses, lw=0.8, alpha=0.5 if len(losses) > SMOOTHING else 1.0,
            marker="o" if len(losses) < 30 else None, ms=3, label="loss per step")
    if len(losses) > SMOOTHING:
        avg = [sum(losses[max(0, i - SMOOTHING + 1):i + 1]) / (i + 1 - max(0, i - SMOOTHING + 1))
               for i in range(len(losses))]
        ax.plot(steps, avg, lw=1.6, label=f"moving average ({SMOOTHING} steps)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy per target token")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_report(directory: Path, report: dict[str, Any]) -> None:
    """``recovery.json`` and ``loss_curve.png`` in ``directory``."""
    directory = Path(directory)
    (directory / REPORT).write_text(json.dumps(report, indent=1) + "\n")
    plot_losses(report["loss"], directory / PLOT)


def publish(out: Path, model: Any, tokenizer: Any, plan: Any, report: dict[str, Any]):
    """Save the merged model, the report and the checkpoints as ``out``, atomically.

    Returns ``structures.export.SaveResult`` (its ``path`` is ``out``).
    """
    from lmprune.structures.export import save_pretrained

    from lmprune.outputs import make_stage

    out = Path(out)
    staging = make_stage(out)
    try:
        target = staging / "model"
        result = save_pretrained(model, target, tokenizer=tokenizer, plan=plan)
        report["save_format"] = result.format
        write_report(target, report)
        _swap(out, target, staging / "old")
        result.path = out
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap(out: Path, new: Path, trash: Path) -> None:
    """Move ``out``'s checkpoints into ``new``, then put ``new`` in ``out``'s place."""
    checkpoints = checkpoint_dir(out)
    moved = checkpoints.is_dir()
    if moved:
        checkpoints.rename(new / CHECKPOINTS)
    try:
        if out.exists():
            out.rename(trash)
        new.rename(out)
    except OSError:
        if moved and out.is_dir() and not checkpoints.exists():
            (new / CHECKPOINTS).rename(checkpoints)
        raise
