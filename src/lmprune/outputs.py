"""Where commands write: up-front checks of output paths, and staging folders that later runs
clean up when the run that made them was killed.

Every command that writes a directory (``prune``, ``train``, ``recover``, ``cp``, and
:func:`lmprune.structures.export.save_pretrained`) first writes into a hidden staging folder
beside the destination and renames it into place at the end, so a failure leaves nothing
half-written. A ``SIGKILL`` (or a power cut) gives the run no chance to delete its stage, so the
stage's name records its owner: ``.<name>.staging-<host>-<pid>-<start>-<random>`` (host: a short
hash of the host name; start: the process's start time, which tells a reused pid apart).
:func:`remove_stale_stages` deletes the stages of ``<name>`` whose owner is gone from this host;
stages of live processes and of other hosts are kept.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lmprune.errors import LmpruneError

_STAGE = re.compile(r"staging-(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-(?P<start>\d+)-[^.]+$")


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe_writable(directory: Path, what: str, target: Path) -> None:
    """Create and delete a file in ``directory`` (also right for root and read-only mounts)."""
    if not directory.is_dir():
        raise LmpruneError(f"{what} {target}: {directory} is a file, so nothing can be created "
                           "under it; choose another path")
    try:
        handle, probe = tempfile.mkstemp(prefix=".lmprune-write-test-", dir=directory)
    except OSError as exc:
        raise LmpruneError(f"{what} {target} is not writable ({directory}: {exc.strerror}); "
                           "choose a directory you can write to") from None
    os.close(handle)
    os.unlink(probe)


def check_output_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Fail now, not after hours of work, if ``path`` cannot become an output directory.

    It must not be a file, and the folder it will be created or replaced in (its nearest
    existing parent) must be writable: the run stages its results there.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LmpruneError(f"{what} {path} is a file; give a directory path (the run writes "
                           "several files into it)")
    _probe_writable(_nearest_existing(path.parent), what, path)
    return path


def check_output_file(path: str | os.PathLike, what: str = "--out") -> Path:
    """Fail now if ``path`` cannot be written as a file (a directory there, or no write access)."""
    path = Path(path)
    if path.is_dir():
        raise LmpruneError(f"{what} {path} is a directory; give a file path, e.g. "
                           f"{path / 'result.json'}")
    _probe_writable(_nearest_existing(path.parent), what, path)
    if path.exists():
        try:
            with open(path, "a"):
                pass
        except OSError as exc:
            raise LmpruneError(f"{what} {path} is not writable ({exc.strerror}); choose another "
                               "file") from None
    return path


def _host() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def _start_time(pid: int) -> int | None:
    """The start time of process ``pid`` in whole seconds, or None if there is none."""
    import psutil

    try:
        return int(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:  # someone else's live process
        return -1


def make_stage(target: str | os.PathLike) -> Path:
    """A new, empty staging folder beside ``target`` (parents created), named by its owner."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    prefix = f".{target.name}.staging-{_host()}-{pid}-{_start_time(pid) or 0}-"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))


def _owner_is_gone(stage: Path) -> bool:
    match = _STAGE.search(stage.name)
    if match is None or match["host"] != _host():
        return False  # not ours to judge: another naming scheme, or another machine's run
    started = _start_time(int(match["pid"]))
    return started is None or (started != -1 and started != int(match["start"]))


def remove_stale_stages(target: str | os.PathLike) -> list[Path]:
    """Delete the staging folders of ``target`` left by processes that no longer run.

    Returns the folders removed, so that the caller can say so.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    removed = []
    pattern = f".{glob.escape(target.name)}.staging-*"
    for stage in sorted(target.parent.glob(pattern)):
        if stage.is_dir() and _owner_is_gone(stage):
            shutil.rmtree(stage, ignore_errors=True)
            removed.append(stage)
    return removed


def stale_stage_note(stages: list[Path]) -> str:
    """One line for the log about the stages :func:`remove_stale_stages` removed."""
    names = ", ".join(s.name for s in stages)
    return (f"removed {len(stages)} staging folder(s) left by a run that was killed: {names}")


@contextlib.contextmanager
def staged_dir(target: str | os.PathLike) -> Iterator[Path]:
    """A staging folder beside ``target``, renamed to ``target`` (replacing what is there) when
    the block succeeds, and deleted otherwise."""
    target = Path(target)
    stage = make_stage(target)
    try:
        yield stage
        if target.exists():
            shutil.rmtree(target)
        stage.rename(target)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
