"""Resumable ``lmprune train``: a checkpoint per training phase, every evaluation interval.

Where: ``DIR.partial/`` beside the output directory ``DIR`` (a sibling, not a staging folder:
the staging folders ``.DIR.staging-*`` of killed runs are cleaned up by later runs, this one
must survive the kill). It holds ``run.json`` (the run's configuration) and
``phase-<i>.pt`` (the latest checkpoint of phase ``i``), each written to a temporary file and
renamed into place, so a kill while writing leaves the previous checkpoint. When the run
ends well, ``DIR`` is written and ``DIR.partial/`` deleted; a failed or killed run leaves it.

Running ``lmprune train`` again with the same ``--out`` resumes: a phase that has a
checkpoint restores it (model in its current pruned shape, optimizer, the method's state:
APT's masks, salience EMA, teacher, compactions and ranks; RNG states, the training curve,
the costs, the clock) and goes on from the step saved, so at most one evaluation interval is
trained again. Phases before it run again from their own final checkpoints (zero steps) and
the steps between phases (a mask search) are repeated; they are deterministic. Another
configuration is an error naming the fields that differ; ``train.resume=false`` (or
deleting ``DIR.partial``) starts afresh.

What is saved of the model: the parameters that train and the buffers. The frozen backbone
of an adapter method is not saved: it is reloaded and cut by the method's recorded
compactions (:meth:`TrainMethod.load_state_dict`), which is also how the pruned shape comes
back. A method that trains every weight (``ft``) saves them all.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmprune.errors import LmpruneError

#: Fields that may differ between a run and its resumption (they do not change what trains).
IGNORED = ("train.progress", "train.resume", "output.overwrite",
           "train.gradient_checkpointing")


class ResumeError(LmpruneError):
    """A partial run that cannot be resumed with this configuration."""


def partial_dir(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.parent / f"{out.name}.partial"


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix[:-1]: data}
    out = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}{key}."))
    return out


def differences(saved: dict, current: dict) -> list[str]:
    """``field: before -> now`` for every configuration field that differs (dotted names)."""
    a, b = _flatten(saved), _flatten(current)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k not in IGNORED]


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": np.random.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train, and the buffers (see the module docstring)."""
    state = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
    state.update({n: b.detach().cpu().clone() for n, b in model.named_buffers()})
    return state


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` into ``model``; every trainable parameter must be in it, shapes equal."""
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    missing = [n for n, p in params.items() if p.requires_grad and n not in state]
    wrong = [n for n, t in state.items() if n in params and params[n].shape != t.shape]
    unknown = [n for n in state if n not in params and n not in buffers]
    if missing or wrong or unknown:
        raise ResumeError(f"the checkpoint does not fit the model rebuilt from the config "
                          f"(missing {missing[:3]}, other shapes {wrong[:3]}, unknown "
                          f"{unknown[:3]}); delete the .partial folder to start afresh")
    with torch.no_grad():
        for name, tensor in state.items():
            target = params.get(name, buffers.get(name))
            target.copy_(tensor.to(target.device))


class TrainCheckpoints:
    """The ``DIR.partial`` folder of one ``lmprune train`` run (see the module docstring)."""

    def __init__(self, out: str | os.PathLike, config: dict) -> None:
        self.dir, self.config = partial_dir(out), json.loads(json.dumps(config, default=str))

    def open(self, resume: bool = True) -> bool:
        """Create the folder, or check a kept one against the config. True: resuming."""
        run = self.dir / "run.json"
        if self.dir.exists() and (not resume or not run.is_file()):
            shutil.rmtree(self.dir)
        if self.dir.exists():
            diff = differences(json.loads(run.read_text()), self.config)
            if diff:
                shown = "\n".join(f"  - {d}" for d in diff[:12])
                raise ResumeError(f"{self.dir} holds a killed run with another configuration; "
                                  f"the fields that differ:\n{shown}\nRerun with that "
                                  f"configuration to resume it, or start afresh with "
                                  f"train.resume=false (deletes it)")
            return any(self.dir.glob("phase-*.pt"))
        self.dir.mkdir(parents=True)
        self._write(run, lambda tmp: tmp.write_text(json.dumps(self.config, indent=1)))
        return False

    def _write(self, path: Path, write) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        write(tmp)
        os.replace(tmp, path)

    def save(self, phase: int, payload: dict) -> None:
        self._write(self.dir / f"phase-{phase}.pt", lambda tmp: torch.save(payload, tmp))

    def load(self, phase: int) -> dict | None:
        path = self.dir / f"phase-{phase}.pt"
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except (OSError, RuntimeError, EOFError) as err:
            raise ResumeError(f"cannot read {path}: {err}; delete {self.dir} to start afresh") \
                from err

    def close(self) -> None:
        """The run ended well: the partial folder goes."""
        shutil.rmtree(self.dir, ignore_errors=True)
