"""Writing a model directory safely: the result of a save, and a directory that appears only
when everything in it was written (lmprune.structures.export, lmprune.structures.decilm)."""
from __future__ import annotations

import contextlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lmprune.errors import LmpruneError


@dataclass
class SaveResult:
    path: Path
    format: str  # "stock", "remote-code" or "decilm"
    load_hint: str
    unaligned: list[str] = field(default_factory=list)  # widths GPUs multiply slowly
    notes: list[str] = field(default_factory=list)  # what some readers of the format lack


@contextlib.contextmanager
def atomic_directory(path: Path, overwrite: bool = False):
    """A temporary directory beside ``path``, moved to ``path`` when the block succeeds and
    deleted otherwise: a failure leaves ``path`` untouched."""
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise LmpruneError(f"{path} already exists and is not empty; choose another directory "
                           "or pass overwrite=True (CLI: output.overwrite=true)")
    from lmprune.outputs import remove_stale_stages, staged_dir

    remove_stale_stages(path)
    with staged_dir(path) as tmp:
        yield tmp


def write_companions(directory: Path, tokenizer=None, plan=None, copy_files: Sequence = ()) -> None:
    """What goes beside a saved model whatever its format: the tokenizer, the pruning plan and
    any extra files (copied by name)."""
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    if plan is not None:
        plan.save(directory)
    for file in copy_files:
        shutil.copyfile(file, directory / Path(file).name)
