"""APT's adaptive pruning schedule: target keep ratio over training, events, mask movement.

APT (Zhao, Hajishirzi, Cao, ICML 2024, Sec. 4.1 / App.) prunes during fine-tuning: the
target density follows a cubic schedule (Zhu & Gupta, 2017) from 1 down to the final keep
ratio ``final`` between a pruning start step ``start`` and stop step ``stop``:

    keep(t) = 1                                                  t < start
    keep(t) = final + (1 - final) * (1 - (t - start)/(stop - start))**3   start <= t <= stop
    keep(t) = final                                              t > stop

Facts from the authors' repository (``ROIM1998/APT``, ``args.py``): ``pruning_start``
(default 1 epoch) and ``pruning_stop`` (default 9) bound the pruning window,
``num_prunings`` (default 5) counts the events, and ``mask_lr`` (default 1e-2) is the
per-step amount by which a pruned block's mask is lowered instead of being set to zero at
once. The issue's defaults (start after 200 steps, stop at 3 epochs, ~10 events) are the
caller's choice; this module takes ``start``/``stop``/``count`` as arguments.

Ablation replacements (``schedule=``): ``cubic`` (above), ``late`` (1 until ``stop``, then
``final``), ``gradual`` (the cubic over the whole run: start 0, stop ``total``),
``oneshot`` (``final`` from step 0), ``after`` (1 until ``total``, the end of training, then
``final``: prune once when tuning ends), ``none`` (always 1: no pruning).
"""
from __future__ import annotations

import torch

from lmprune.errors import LmpruneError

SCHEDULES = ("cubic", "late", "gradual", "oneshot", "after", "none")


def _cubic(step: float, start: float, stop: float, final: float) -> float:
    """keep(t) = final + (1 - final)(1 - (t - start)/(stop - start))^3, clamped outside."""
    if step < start:
        return 1.0
    if step >= stop:
        return float(final)
    progress = (step - start) / (stop - start)
    return float(final + (1.0 - final) * (1.0 - progress) ** 3)


def keep_ratio(step: float, schedule: str, start: float, stop: float, total: float,
               final: float) -> float:
    """Target fraction of prunable parameters kept at training ``step`` (see module doc).

    ``start``/``stop`` bound the cubic window (``cubic``; ``late`` prunes at ``stop``);
    ``total`` is the number of training steps (used by ``gradual`` and ``after``); ``final``
    in (0, 1].
    """
    if schedule not in SCHEDULES:
        raise LmpruneError(f"unknown APT pruning schedule {schedule!r}; use one of "
                           f"{', '.join(SCHEDULES)}")
    if not 0.0 < final <= 1.0:
        raise LmpruneError(f"final keep ratio must be in (0, 1], got {final}; "
                           f"set it to 1 - target sparsity")
    if schedule == "none":
        return 1.0
    if schedule == "oneshot":
        return float(final)
    if schedule == "after":
        return 1.0 if step < total else float(final)
    if schedule == "gradual":
        if total <= 0:
            raise LmpruneError(f"the 'gradual' schedule needs total > 0 training steps, got {total}")
        return _cubic(step, 0.0, float(total), final)
    if not 0 <= start < stop:
        raise LmpruneError(f"APT pruning needs 0 <= start < stop, got start={start}, "
                           f"stop={stop}; move the stop step after the start step")
    if schedule == "late":
        return 1.0 if step < stop else float(final)
    return _cubic(step, start, stop, final)


def pruning_events(start: int, stop: int, count: int) -> list[int]:
    """``count`` pruning steps evenly spaced from ``start`` to ``stop`` inclusive.

    Step i (0-based) is ``round(start + i * (stop - start) / (count - 1))``; one event is
    ``[stop]`` (prune once, to the final ratio). Duplicates (a window shorter than the
    number of events) are dropped, so the list is strictly increasing.
    """
    if count < 1:
        raise LmpruneError(f"the number of pruning events must be >= 1, got {count}")
    if not 0 <= start <= stop:
        raise LmpruneError(f"pruning events need 0 <= start <= stop, got {start}, {stop}")
    if count == 1:
        return [int(stop)]
    span = (stop - start) / (count - 1)
    steps = [int(round(start + i * span)) for i in range(count)]
    return sorted(set(steps))


def move_masks(current: torch.Tensor, target_binary: torch.Tensor,
               step_fraction: float, check: bool = True) -> torch.Tensor:
    """Move soft masks toward their 0/1 targets by at most ``step_fraction`` per call.

    Rule (APT's gradual mask decay, ``mask_lr`` = 0.01 per step in the authors' code):
    ``new = current + clip(target - current, -step_fraction, +step_fraction)``, and every
    entry within ``step_fraction`` of its target (plus the float rounding that a chain of
    ``1 / step_fraction`` steps can accumulate, ``eps * (2 + 1 / step_fraction)``, capped at
    half a step) lands *exactly* on the target (no float residue). So after ``ceil(1 / step_fraction)`` calls a mask that started in [0, 1] is
    exactly binary; ``step_fraction >= 1`` jumps straight to the targets. Returns a new
    tensor of ``current``'s dtype; values stay in [0, 1] when ``current`` does.
    ``check=False`` skips verifying that the targets are binary (it waits for the device):
    for callers whose targets are binary by construction, on every training step.
    """
    if step_fraction <= 0:
        raise LmpruneError(f"step_fraction must be > 0, got {step_fraction}")
    if current.shape != target_binary.shape:
        raise LmpruneError(f"mask shape {tuple(current.shape)} differs from target shape "
                           f"{tuple(target_binary.shape)}")
    target = target_binary.to(current.dtype)
    if check and not torch.all((target == 0) | (target == 1)):  # a device read
        raise LmpruneError("target masks must be binary (0 or 1)")
    current = current.detach()
    diff = target - current
    stepped = current + diff.clamp(-step_fraction, step_fraction)
    eps = torch.finfo(current.dtype).eps if current.is_floating_point() else 0.0
    slack = min(eps * (2.0 + 1.0 / step_fraction), 0.5 * step_fraction)
    return torch.where(diff.abs() <= step_fraction + slack, target, stepped)
