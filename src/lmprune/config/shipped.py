"""The YAML configs shipped inside the package (``lmprune/configs/*.yaml``).

Each file starts with a ``# <one-line description>`` comment, which ``lmprune ls configs``
shows. Commands that take a config accept either a path or a shipped config's name
(``demo`` or ``demo.yaml``); an existing file always wins over a shipped name.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmprune.errors import LmpruneError, UnknownNameError

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass(frozen=True)
class ShippedConfig:
    name: str
    path: Path
    description: str


def _description(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            return stripped.lstrip("#").strip()
        if stripped:
            break
    return ""


def shipped_configs() -> list[ShippedConfig]:
    """Every shipped config, sorted by name."""
    if not SHIPPED_DIR.is_dir():
        return []
    return [ShippedConfig(p.stem, p, _description(p))
            for p in sorted(SHIPPED_DIR.glob("*.yaml"), key=lambda p: p.stem)]


def resolve_config(name_or_path: str | Path) -> Path:
    """The file for a path or a shipped config name.

    Raises :class:`UnknownNameError` (with close names) for an unknown bare name and
    :class:`LmpruneError` for a path-like argument that does not exist.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.exists():
        raise LmpruneError(f"config {str(name_or_path)!r} is not a file")
    text = str(name_or_path)
    stem = text[:-5] if text.endswith(".yaml") else text
    by_name = {c.name: c.path for c in shipped_configs()}
    if stem in by_name and "/" not in stem and "\\" not in stem:
        return by_name[stem]
    if "/" in text or "\\" in text or text.endswith((".yaml", ".yml")):
        raise LmpruneError(f"config file not found: {text}. Pass an existing YAML file or "
                           f"the name of a shipped config ({', '.join(sorted(by_name))}).")
    raise UnknownNameError("config", text, by_name,
                           hint="Pass a path to a YAML file, or see `lmprune ls configs`.")
