"""List the known models, datasets, pruning methods and shipped configs."""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

from lmprune.cli._common import add_command, print_table
from lmprune.errors import LmpruneError

SECTIONS = ("models", "datasets", "methods", "configs")
#: Listed only when asked for by name (long tables): `lmprune ls components`.
EXTRA_SECTIONS = ("components",)

# Table columns per section: (record key, header). JSON output has every field.
COLUMNS: dict[str, list[tuple[str, str]]] = {
    "models": [("name", "NAME"), ("family", "FAMILY"), ("default_task", "TASK"),
               ("offline", "OFFLINE"), ("source", "SOURCE"), ("description", "DESCRIPTION")],
    "datasets": [("name", "NAME"), ("kind", "KIND"), ("splits", "SPLITS"),
                 ("offline", "OFFLINE"), ("source", "SOURCE"), ("description", "DESCRIPTION")],
    "methods": [("name", "NAME"), ("description", "DESCRIPTION")],
    "configs": [("name", "NAME"), ("description", "DESCRIPTION")],
    "components": [("method", "METHOD"), ("component", "COMPONENT"), ("action", "ACTION"),
                   ("overrides", "OVERRIDES"), ("meaning", "MEANING")],
}


class _Unavailable(Exception):
    """The module providing a section is not part of this build (yet)."""


def _record(obj: Any, keys: list[str]) -> dict[str, Any]:
    """A catalog entry (dataclass, mapping or plain object) as a dict."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return dict(obj)
    return {k: getattr(obj, k, None) for k in keys}


def _catalog(module: str, function: str) -> list:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module or module.startswith(f"{exc.name}."):
            raise _Unavailable(f"{module} is not available in this build") from None
        raise
    if not callable(getattr(mod, function, None)):
        raise _Unavailable(f"{module} has no {function}() yet")
    return list(getattr(mod, function)())


def list_models() -> list[dict[str, Any]]:
    keys = ["name", "family", "source", "description", "default_task", "offline"]
    return [_record(m, keys) for m in _catalog("lmprune.zoo", "list_models")]


def list_datasets() -> list[dict[str, Any]]:
    keys = ["name", "kind", "description", "offline", "splits", "source"]
    return [_record(d, keys) for d in _catalog("lmprune.data", "list_datasets")]


def list_methods() -> list[dict[str, Any]]:
    from lmprune.registry import load_builtin_methods

    return [{"name": name, "description": help_text}
            for name, _, help_text in load_builtin_methods().items()]


def list_configs() -> list[dict[str, Any]]:
    from lmprune.config import shipped_configs

    return [{"name": c.name, "description": c.description, "path": str(c.path)}
            for c in shipped_configs()]


def list_components() -> list[dict[str, Any]]:
    """Each method's ablatable components: what REMOVE and each REPLACE run (lmprune ablate)."""
    from lmprune.ablation.components import component_rows

    return component_rows()


LISTERS: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "models": list_models, "datasets": list_datasets, "methods": list_methods,
    "configs": list_configs, "components": list_components,
}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "ls", help="list models, datasets, methods and shipped configs",
        description="List what lmprune knows by name: model aliases (the zoo), datasets, "
                    "pruning methods and the configs shipped with the package. Without an "
                    "argument, all four. `components` lists each method's ablatable "
                    "components (what `lmprune ablate` plans can name) and what REMOVE and "
                    "each REPLACE run.",
        examples=["lmprune ls", "lmprune ls models", "lmprune ls methods --json",
                  "lmprune ls components"])
    choices = SECTIONS + EXTRA_SECTIONS
    parser.add_argument("what", nargs="?", choices=choices, metavar="{" + ",".join(choices) + "}",
                        help="the one section to list (default: all)")
    parser.add_argument("--json", action="store_true",
                        help="print JSON ({section: [records]}) instead of tables")
    return parser


def run(args: argparse.Namespace) -> int:
    sections = [args.what] if args.what else list(SECTIONS)
    results: dict[str, list[dict[str, Any]] | None] = {}
    notes: dict[str, str] = {}
    for section in sections:
        try:
            results[section] = LISTERS[section]()
        except _Unavailable as exc:
            if args.what:  # asked for exactly this: an error
                raise LmpruneError(f"cannot list {section}: {exc}") from None
            results[section], notes[section] = None, str(exc)
    if args.json:
        json.dump(results, sys.stdout, indent=2, default=str)
        print()
        return 0
    for i, section in enumerate(sections):
        if len(sections) > 1:
            print(("\n" if i else "") + f"{section}:")
        rows = results[section]
        if rows is None:
            print(f"  ({notes[section]})")
        elif not rows:
            print("  (none)")
        else:
            print_table(rows, COLUMNS[section], indent=2 if len(sections) > 1 else 0)
    return 0
