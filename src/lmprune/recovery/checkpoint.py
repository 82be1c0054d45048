"""Resumable recovery: checkpoints of adapters, optimizer and step in ``OUT/checkpoints``.

A checkpoint is a directory ``step-0000200`` holding

* ``adapter.pt``: the trainable (LoRA) tensors, by parameter name; the frozen base is not
  saved, it is reloaded from the input model;
* ``optimizer.pt``: AdamW's state;
* ``rng-<rank>.pt``: each process's torch RNG state (LoRA dropout draws from it), so a resumed
  run on the same hardware continues bit for bit;
* ``state.json``: the step, the loss curve so far, and the *fingerprint* of the run (settings,
  LoRA config, number of examples, trainable shapes); resuming with another fingerprint is
  refused, since the schedule and the data order would silently change.

Each checkpoint is written to a hidden temporary directory and renamed into place, then older
ones are deleted: an interruption leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from lmprune.errors import LmpruneError
from lmprune.recovery.loop import TrainState

CHECKPOINTS = "checkpoints"
PREFIX = "step-"


class CheckpointError(LmpruneError):
    """A checkpoint that cannot be resumed from (other settings, damaged files)."""


def checkpoint_dir(out: Path) -> Path:
    return Path(out) / CHECKPOINTS


def latest_checkpoint(out: Path) -> Path | None:
    """The checkpoint of the highest step in ``out/checkpoints`` (None if there is none)."""
    root = checkpoint_dir(out)
    if not root.is_dir():
        return None
    found = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
                   and p.name[len(PREFIX):].isdigit() and (p / "state.json").exists())
    return found[-1] if found else None


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _rng_state() -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def save_checkpoint(out: Path, model: torch.nn.Module, optimizer: Any, state: TrainState,
                    fingerprint: dict, accelerator: Any) -> Path | None:
    """Write the checkpoint of ``state.step`` (collective: call on every process)."""
    root = checkpoint_dir(out)
    final = root / f"{PREFIX}{state.step:07d}"
    tmp = root / f".{final.name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(_rng_state(), tmp / f"rng-{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        torch.save(trainable_state(model), tmp / "adapter.pt")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        data = {"step": state.step, "losses": state.losses, "lrs": state.lrs,
                "tokens": state.tokens, "seconds": state.seconds, "fingerprint": fingerprint,
                "num_processes": accelerator.num_processes}
        (tmp / "state.json").write_text(json.dumps(data, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in root.iterdir():  # keep only the newest checkpoint
            if old != final and old.name.startswith((PREFIX, f".{PREFIX}")):
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _mismatch(saved: dict, current: dict, prefix: str = "") -> list[str]:
    problems = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            problems += _mismatch(a, b, f"{prefix}{key}.")
        elif a != b:
            problems.append(f"{prefix}{key}: checkpoint {a!r}, now {b!r}")
    return problems


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: Any, fingerprint: dict,
                    accelerator: Any) -> TrainState:
    """Restore adapters, optimizer and RNG from ``path``; returns the saved progress."""
    try:
        data = json.loads((path / "state.json").read_text())
        adapter = torch.load(path / "adapter.pt", map_location="cpu", weights_only=True)
        optim = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err}; delete it to resume from "
                              "an earlier one, or start over with output.overwrite=true") from err
    problems = _mismatch(data.get("fingerprint", {}), json.loads(json.dumps(fingerprint)))
    if problems:
        shown = "\n".join(f"  - {p}" for p in problems[:10])
        raise CheckpointError(f"checkpoint {path} was made with other settings:\n{shown}\n"
                              "Resume with the settings of that run, or start over with "
                              "output.overwrite=true (without --resume).")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in adapter.items():
            params[name].copy_(tensor)
    optimizer.load_state_dict(optim)
    rng_file = path / f"rng-{accelerator.process_index}.pt"
    if rng_file.exists():
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return TrainState(step=int(data["step"]), losses=list(data["losses"]), lrs=list(data["lrs"]),
                      tokens=int(data["tokens"]), seconds=float(data["seconds"]))
