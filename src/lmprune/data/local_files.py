"""Reading a benchmark from the user's own files (``data_files=``) instead of the hub.

The files hold the hub's *raw* columns (``sentence,label`` for SST-2, ``article,highlights``
for CNN/DailyMail, ...), so a downloaded copy or a CSV export works unchanged. The format
comes from the extension, and ``datasets``' packaged builders (csv, json, parquet, text) read
it, which handles compression and globs for us.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import datasets

from lmprune.errors import LmpruneError

PathLike = Union[str, os.PathLike]
DataFiles = Union[PathLike, Sequence[PathLike], Mapping[str, Union[PathLike, Sequence[PathLike]]]]

BUILDERS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".txt": "text",
    ".raw": "text",  # wikitext's wiki.*.raw
    ".tokens": "text",  # wikitext's wiki.*.tokens
}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zip")


def _as_list(files: PathLike | Sequence[PathLike]) -> list[str]:
    if isinstance(files, (str, os.PathLike)):
        return [os.fspath(files)]
    return [os.fspath(f) for f in files]


def files_for_split(data_files: DataFiles, split: str, name: str) -> list[str]:
    """The files that make up ``split``.

    A path or a list of paths *is* the requested split, whatever its name; a mapping must have
    the split as a key.
    """
    if isinstance(data_files, Mapping):
        if split not in data_files:
            raise LmpruneError(
                f"data_files for {name!r} has no split {split!r}; it has: "
                f"{', '.join(map(str, data_files)) or 'none'}. Ask for one of those "
                f"(split=...) or add {split!r} to the mapping."
            )
        files = _as_list(data_files[split])
    else:
        files = _as_list(data_files)
    if not files:
        raise LmpruneError(f"data_files for {name!r} split {split!r} is empty")
    plain = [f for f in files if not any(c in f for c in "*?[")]  # globs are datasets' job
    missing = [f for f in plain if not Path(f).exists()]
    if missing:
        raise LmpruneError(f"data file(s) not found for {name!r}: {', '.join(missing)}")
    empty = [f for f in plain if _is_blank(Path(f))]
    if empty:
        raise LmpruneError(f"data file {empty[0]} is empty (no rows); give a file with at least "
                           "one row")
    return files


def _is_blank(path: Path) -> bool:
    """An empty file, or a small one with nothing but whitespace (not even a csv header)."""
    if not path.is_file():
        return False
    size = path.stat().st_size
    return size == 0 or (size < 65536 and not path.read_bytes().strip())


def _extension(path: str) -> str:
    """The format extension of ``path``, looking through a compression suffix (``x.csv.gz``)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    while suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def builder_for(files: list[str]) -> str:
    """``datasets`` packaged builder for the files' common extension (compression ignored)."""
    builders = set()
    for f in files:
        ext = _extension(f)
        if ext not in BUILDERS:
            raise LmpruneError(
                f"cannot tell the format of {f!r} from its extension {ext or '(none)'!r}; "
                f"supported: {', '.join(sorted(BUILDERS))} (optionally compressed: "
                f"{', '.join(COMPRESSIONS)})"
            )
        builders.add(BUILDERS[ext])
    if len(builders) > 1:
        raise LmpruneError(f"data files of one split mix formats ({', '.join(sorted(builders))}): {files}")
    return builders.pop()


def read_files(files: list[str], builder: str) -> datasets.Dataset:
    """Read the files into one table (``datasets`` caches the Arrow conversion)."""
    kwargs: dict[str, Any] = {"delimiter": "\t"} if _extension(files[0]) == ".tsv" else {}
    try:
        return datasets.load_dataset(builder, data_files={"train": files}, split="train", **kwargs)
    except Exception as e:  # a parse error in the user's file: say which file, keep the cause
        raise LmpruneError(f"could not read {files} as {builder}: {type(e).__name__}: {e}") from e


def flatten_squad_json(ds: datasets.Dataset) -> datasets.Dataset:
    """The original SQuAD JSON (``{"version", "data": [{"title", "paragraphs": [...]}]}``)
    as flat rows ``id, title, context, question, answers``; flat tables pass through."""
    if "data" not in ds.column_names or "question" in ds.column_names:
        return ds
    rows = []
    for record in ds:
        for article in record["data"]:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    answers = [] if qa.get("is_impossible") else qa.get("answers") or []
                    rows.append({
                        "id": qa["id"],
                        "title": article.get("title", ""),
                        "context": paragraph["context"],
                        "question": qa["question"],
                        "answers": {
                            "text": [a["text"] for a in answers],
                            "answer_start": [int(a["answer_start"]) for a in answers],
                        },
                    })
    return datasets.Dataset.from_list(rows)
