"""Helpers shared by the subcommands: parser boilerplate, config arguments, tables."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from lmprune.errors import LmpruneError


def add_command(subparsers: Any, name: str, *, help: str, description: str,
                examples: Sequence[str]) -> argparse.ArgumentParser:
    """A subcommand parser with a description and an ``examples:`` epilog kept as written."""
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    return subparsers.add_parser(name, help=help, description=description, epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``CONFIG [key=value ...]``: a YAML path or shipped config name, then overrides."""
    parser.add_argument("config", metavar="CONFIG",
                        help="a YAML file, or the name of a shipped config (`lmprune ls configs`)")
    parser.add_argument("overrides", metavar="key=value", nargs="*",
                        help="override a field by its dotted path, e.g. prune.sparsity=0.5 "
                             "or prune.structures=[heads,neurons]")


def load_config_from_args(args: argparse.Namespace, schema: type | None = None):
    """The validated config named by ``args.config`` with ``args.overrides`` applied."""
    from lmprune.config import RunConfig, load_config

    config = str(args.config)
    if "=" in config and not Path(config).exists():
        raise LmpruneError(f"expected a config file or shipped config name before the "
                           f"key=value overrides, got {config!r} (e.g. `demo {config}`)")
    return load_config(config, list(args.overrides or []), schema or RunConfig)


def overrides_from_flags(args: argparse.Namespace, flags: Mapping[str, str]) -> list[str]:
    """``--flag value`` options as ``config.path=value`` overrides, then the explicit ones.

    ``flags`` maps an argparse destination to its config path; unset flags are skipped, and
    explicit ``key=value`` overrides come last so they win.
    """
    given = [f"{path}={getattr(args, name)}" for name, path in flags.items()
             if getattr(args, name, None) is not None]
    return given + list(args.overrides or [])


def cell(value: Any) -> str:
    """How a value looks in a table: yes/no, comma-joined lists, '-' for nothing."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(str(v) for v in value) or "-"
    return " ".join(str(value).split())  # one line per row, whatever the text holds


def print_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[tuple[str, str]],
                file: TextIO | None = None, indent: int = 0) -> None:
    """Print ``rows`` as aligned columns; ``columns`` are ``(key, HEADER)`` pairs."""
    file = file or sys.stdout
    table = [[header for _, header in columns]]
    table += [[cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    for r in table:
        line = "  ".join(text.ljust(w) for text, w in zip(r, widths, strict=True))
        print(" " * indent + line.rstrip(), file=file)
