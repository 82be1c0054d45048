"""Training-curve plot of a fine-tuning-with-pruning run: metric and keep ratio vs time.

Top panel: the evaluation metric against wall-clock seconds, with the training step of the
evaluated points on a secondary x axis above it, and a dashed line at ``fraction`` of the
reference (the target of time-to-accuracy) when a reference is given. Bottom panel: the
kept-parameter ratio against the same seconds, which shows when pruning happened. Probe
points (phase ``"probe"``: a two-stage pipeline pruned along its run, see
:class:`lmprune.training.baselines.PruneProbe`) are drawn apart, as markers at their time.
"""
from __future__ import annotations

from pathlib import Path

from lmprune.errors import LmpruneError
from lmprune.reporting.plots import _pyplot

_MAX_STEP_TICKS = 6


def _series(curve: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(seconds, values) of the entries that hold a number under ``key``, in time order."""
    points = sorted((e["seconds"], e[key]) for e in curve
                    if isinstance(e.get(key), (int, float)) and not isinstance(e.get(key), bool))
    return [p[0] for p in points], [p[1] for p in points]


def _check_curve(curve: list[dict], metric_name: str) -> None:
    if not curve:
        raise LmpruneError(f"cannot plot the {metric_name} curve: it has no points")
    for index, entry in enumerate(curve):
        if not isinstance(entry, dict) or not isinstance(entry.get("seconds"), (int, float)):
            raise LmpruneError(f"curve entry {index} has no number under 'seconds': {entry!r}")


def _step_axis(ax, curve: list[dict]) -> None:
    """Label some evaluated points with their training step on a top x axis."""
    steps = sorted((e["seconds"], e["step"]) for e in curve
                   if isinstance(e.get("step"), int) and not isinstance(e.get("step"), bool))
    if not steps:
        return
    every = max(1, -(-len(steps) // _MAX_STEP_TICKS))  # ceil: at most _MAX_STEP_TICKS ticks
    shown = steps[::every]
    top = ax.twiny()
    top.set_xlim(ax.get_xlim())
    top.set_xticks([s for s, _ in shown], [str(step) for _, step in shown], fontsize=7)
    top.set_xlabel("step", fontsize=8)


def plot_training_curve(curve: list[dict], path: Path, metric_name: str,
                        reference: float | None = None, title: str = "",
                        fraction: float = 0.97) -> Path:
    """Write a PNG of ``curve`` (entries with "seconds", "step", "metric", "keep_ratio").

    Entries missing "metric" or "keep_ratio" are left out of that panel only.
    """
    _check_curve(curve, metric_name)
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    probes = [e for e in curve if e.get("phase") == "probe"]
    curve = [e for e in curve if e.get("phase") != "probe"]
    seconds, values = _series(curve, "metric")
    top.plot(seconds, values, marker="o", markersize=3, color="#1f77b4", label=metric_name)
    if probes:
        seconds, values = _series(probes, "metric")
        top.plot(seconds, values, linestyle="none", marker="x", color="#ff7f0e",
                 label="pruned at this point (search time added)")
    if reference is not None:
        target = fraction * reference
        top.axhline(target, linestyle="--", color="#d62728", linewidth=1,
                    label=f"{fraction:.0%} of reference {reference:.4g} = {target:.4g}")
    top.set_ylabel(metric_name)
    top.grid(alpha=0.3)
    top.legend(loc="lower right", fontsize=8)
    seconds, ratios = _series(curve, "keep_ratio")
    bottom.plot(seconds, ratios, drawstyle="steps-post", color="#2ca02c")
    if probes:
        seconds, ratios = _series(probes, "keep_ratio")
        bottom.plot(seconds, ratios, linestyle="none", marker="x", color="#ff7f0e")
    bottom.set_ylabel("kept params ratio")
    bottom.set_ylim(0, 1.05)
    bottom.set_xlabel("training time (s)")
    bottom.grid(alpha=0.3)
    _step_axis(top, curve)
    fig.suptitle(title or f"{metric_name} and kept parameters during training")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_training_cost(series: list[dict], path: Path, events: list[dict] | None = None,
                       title: str = "") -> Path:
    """Write a PNG of what training cost along the run (``metrics.json``'s
    ``training_cost``) against the training step: seconds per step, memory (the interval's
    GPU peak, or the CPU process's resident set) and the MB of tensors held between steps,
    with the pruning events (dotted) and compactions (dashed) marked."""
    if not series:
        raise LmpruneError("cannot plot the training cost: it has no points")
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(3, 1, figsize=(7, 7), sharex=True)
    steps = [p["step"] for p in series]
    gpu = series[-1].get("memory_kind", "").startswith("cuda")
    panels = [("step_seconds", "seconds per step", "#1f77b4"),
              ("memory_mb", "GPU peak MB\n(of the interval)" if gpu else "process RSS MB\n(CPU)",
               "#9467bd"),
              ("state_mb", "tensors held\nbetween steps (MB)", "#2ca02c")]
    for ax, (key, label, color) in zip(axes, panels, strict=True):
        ax.plot(steps, [p[key] for p in series], marker="o", markersize=3,
                drawstyle="steps-pre", color=color)
        ax.set_ylabel(label, fontsize=8)
        ax.set_ylim(bottom=0)
        for e in events or []:
            compaction = e.get("kind") == "compaction"
            ax.axvline(e["step"], color="#d62728" if compaction else "#7f7f7f",
                       linestyle="--" if compaction else ":", linewidth=1,
                       label=e.get("kind") if e is _first(events, e) else None)
        ax.grid(alpha=0.3)
    if events:
        axes[0].legend(loc="lower left", fontsize=7)
    axes[-1].set_xlabel("training step (each point: the interval that ends there)")
    fig.suptitle(title or "what each training interval cost")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _first(events: list[dict], event: dict) -> dict:
    """The first event of ``event``'s kind (one legend entry per kind)."""
    return next(e for e in events if e.get("kind") == event.get("kind"))
