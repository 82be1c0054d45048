"""Copy a saved model directory, re-saving it with this lmprune, optionally in another format.

Reading and writing are separate steps: :func:`read_source` loads any directory lmprune saved
(:func:`lmprune.load_pretrained`: pruned or dense; stock, remote-code or DeciLM format) with
the files that travel with the weights; a writer per format (:data:`WRITERS`) saves it. The
Hugging Face writer refreshes the shipped ``lmprune_pruned.py``; the DeciLM writer produces
the Nemotron-NAS per-layer format that vLLM and llama.cpp serve, or says why the model does
not fit it.
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
        subparsers, "cp", help="copy a saved model, re-saving it or converting its format",
        description="Load a model directory saved by lmprune (pruned or dense; stock, "
                    "remote-code or DeciLM format) and save it to DST with this version's code. "
                    "--format auto (default) chooses again between stock transformers files and "
                    "the remote-code format, whose directory gets the current lmprune_pruned.py "
                    "(lmprune.load_pretrained warns when a directory's copy is outdated); "
                    "--format decilm writes the Nemotron-NAS / DeciLM per-layer format that vLLM "
                    "and llama.cpp serve, or says exactly why the model does not fit it. "
                    "Tokenizer files and lmprune_plan.json are copied; other files (reports, "
                    "checkpoints) are not. DST is written atomically.",
        examples=["lmprune cp runs/taylor/model runs/taylor/model-v2",
                  "lmprune cp runs/taylor/model runs/taylor/model --overwrite   # in place",
                  "lmprune cp runs/ri/model runs/ri-decilm --format decilm",
                  "vllm serve runs/ri-decilm --trust-remote-code"])
    parser.add_argument("src", metavar="SRC", help="a model directory saved by lmprune")
    parser.add_argument("dst", metavar="DST", help="the directory to write (new or empty)")
    parser.add_argument("--format", choices=tuple(WRITERS), default="auto",
                        help="auto (stock or remote code, whichever fits; default) or decilm")
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


def write_decilm(source: Source, dst: Path, overwrite: bool):
    """Save in the DeciLM / Nemotron-NAS format; an error listing what does not fit."""
    from lmprune.structures.decilm import save_decilm

    return save_decilm(source.model, dst, overwrite=overwrite, copy_files=source.carried)


WRITERS = {"auto": write_hugging_face, "decilm": write_decilm}


def run(args: argparse.Namespace) -> int:
    src, dst = Path(args.src), Path(args.dst)
    check_source(src)
    check_destination(dst, args.overwrite)
    source = read_source(src)
    saved = WRITERS[args.format](source, dst, args.overwrite)
    copied = ", ".join(f.name for f in source.carried) or "no tokenizer or plan files"
    print(f"saved {src} as {dst} ({saved.format} format; copied {copied}); load with: "
          f"{saved.load_hint}")
    for note in saved.notes:
        print(f"note: {note}")
    return 0
