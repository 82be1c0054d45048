"""Copy a saved model directory, re-saving it with this version of lmprune.

Reading and writing are separate steps: :func:`read_source` loads any directory lmprune saved
(:func:`lmprune.load_pretrained`: pruned or dense, stock or remote-code format) with the files
that travel with the weights; :func:`write_hugging_face` writes it with
:func:`lmprune.structures.export.save_pretrained`, which refreshes the shipped
``lmprune_pruned.py``. Another output format is another writer taking a :class:`Source`.
"""
from __future__ import annotations

import argparse
import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmprune.cli._common import add_command
from lmprune.errors import LmpruneError

#: Files copied as they are: the tokenizer's (any of these names) and the pruning plan.
CARRIED = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
           "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt", "spiece.model",
           "sentencepiece*.model", "chat_template.*", "lmprune_plan.json")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "cp", help="copy a saved model, re-saving it with this lmprune",
        description="Load a model directory saved by lmprune (pruned or dense; stock or "
                    "remote-code format) and save it to DST with this version's code: the "
                    "format is chosen again and a remote-code directory gets the current "
                    "lmprune_pruned.py (lmprune.load_pretrained warns when a directory's copy "
                    "is outdated). Tokenizer files and lmprune_plan.json are copied; other "
                    "files (reports, checkpoints) are not. DST is written atomically.",
        examples=["lmprune cp runs/taylor/model runs/taylor/model-v2",
                  "lmprune cp runs/taylor/model runs/taylor/model --overwrite   # in place"])
    parser.add_argument("src", metavar="SRC", help="a model directory saved by lmprune")
    parser.add_argument("dst", metavar="DST", help="the directory to write (new or empty)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace DST if it holds files (also needed to refresh SRC in place)")
    return parser


@dataclass
class Source:
    """A loaded model directory: the model and the files that travel with it."""

    path: Path
    model: Any
    carried: list[Path]


def check_source(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise LmpruneError(f"{path} is not a saved model directory (no config.json); give the "
                           "directory a model was saved to (e.g. runs/x/model)")


def carried_files(path: Path) -> list[Path]:
    return sorted(f for f in path.iterdir()
                  if f.is_file() and any(fnmatch.fnmatch(f.name, p) for p in CARRIED))


def read_source(path: Path) -> Source:
    import lmprune

    check_source(path)
    return Source(path, lmprune.load_pretrained(path, dtype="auto"), carried_files(path))


def check_destination(dst: Path, overwrite: bool) -> None:
    from lmprune.outputs import check_output_dir

    check_output_dir(dst, "DST")
    if dst.exists() and any(dst.iterdir()) and not overwrite:
        raise LmpruneError(f"{dst} exists and is not empty; choose another DST or pass "
                           "--overwrite to replace it")


def write_hugging_face(source: Source, dst: Path, overwrite: bool):
    """Save in Hugging Face format (stock or remote code, whichever fits); the SaveResult."""
    from lmprune.structures.export import save_pretrained

    return save_pretrained(source.model, dst, overwrite=overwrite, copy_files=source.carried)


def run(args: argparse.Namespace) -> int:
    src, dst = Path(args.src), Path(args.dst)
    check_source(src)
    check_destination(dst, args.overwrite)
    source = read_source(src)
    saved = write_hugging_face(source, dst, args.overwrite)
    copied = ", ".join(f.name for f in source.carried) or "no tokenizer or plan files"
    print(f"saved {src} as {dst} ({saved.format} format; copied {copied})")
    return 0
