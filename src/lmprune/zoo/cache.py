"""An on-disk cache of converted models, written atomically.

A cached model is a directory ``<cache>/models/<name>`` that appears in one ``os.replace``
from a temporary sibling, with a marker file written last. So an interrupted conversion
(Ctrl-C, OOM kill, a bug) never leaves a half directory that later loads would trust, and a
file lock makes concurrent processes (pytest-xdist workers, two CLI runs) convert once.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

MARKER = "lmprune_cache.json"


def cache_root() -> Path:
    """``$LMPRUNE_CACHE`` or ``~/.cache/lmprune``."""
    return Path(os.environ.get("LMPRUNE_CACHE") or Path.home() / ".cache" / "lmprune").expanduser()


def models_dir() -> Path:
    return cache_root() / "models"


def read_marker(directory: Path) -> dict[str, Any] | None:
    """The marker of a complete cache entry, or None if the entry is missing or incomplete."""
    try:
        return json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (provenance of converted and carried models)."""
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _is_current(directory: Path, version: str) -> bool:
    marker = read_marker(directory)
    return marker is not None and marker.get("version") == version


def cached_dir(name: str, version: str, build: Callable[[Path], dict[str, Any]]) -> Path:
    """Return ``<cache>/models/<name>``, calling ``build(tmp_dir)`` first if it is missing.

    ``build`` writes the model files into the empty directory it is given and returns
    provenance (stored in the marker). ``version`` identifies the conversion recipe: an
    entry written with another version is rebuilt.
    """
    final = models_dir() / name
    if _is_current(final, version):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final.parent / f".{name}.lock")):
        if _is_current(final, version):  # another process finished while we waited
            return final
        # Holding the lock, any temporary sibling belongs to a process that died.
        for stale in final.parent.glob(f".{name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=final.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; the cache may be shared
        try:
            provenance = build(tmp)
            marker = {"name": name, "version": version, **provenance}
            (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
            if final.exists():  # outdated or incomplete entry
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final
