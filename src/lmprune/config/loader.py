"""YAML + ``key=value`` overrides → nested, type-checked config dataclasses, and back to YAML.

One pass collects *every* problem before anything raises (torchtune's "all errors at once"):
YAML syntax and duplicate keys, unknown keys (with "did you mean"), missing required fields,
wrong types (:mod:`.convert`), values rejected by a section's ``validate()``, and bad
overrides (:mod:`.overrides`). They are raised together as one
:class:`~lmprune.errors.ConfigError` naming the file.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from lmprune.config.convert import BAD, Converter, describe, validate_tree
from lmprune.config.overrides import apply_overrides
from lmprune.config.section import deferred_validation
from lmprune.errors import ConfigError

C = TypeVar("C")


# ------------------------------------------------------------------------------ YAML input

class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # unhashable key; the base constructor reports it
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first given on line {first + 1})",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | Path) -> tuple[dict, list[str]]:
    """The top-level mapping of a YAML file, plus problems (syntax, duplicates, not a mapping).

    A missing or unreadable file raises :class:`ConfigError` at once: nothing else can be
    checked without it.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as stream:
            data = yaml.load(stream, Loader=_StrictLoader)
    except FileNotFoundError:
        raise ConfigError([f"file not found: {path}"], source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read {path}: {exc}"], source=str(path)) from None
    except yaml.YAMLError as exc:
        return {}, [f"invalid YAML: {exc}"]
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        return {}, [f"the file must hold a mapping of sections (key: value lines), "
                    f"got {describe(data)}"]
    return data, []


# ----------------------------------------------------------------------------- entry points

def _format(problems: list[tuple[str, str]], applied: Mapping[str, str]) -> list[str]:
    lines: list[str] = []
    for path, message in problems:
        origin = next((text for key, text in applied.items()
                       if path == key or path.startswith((key + ".", key + "["))), None)
        if origin and "in override" not in message:
            message += f" (set by override {origin!r})"
        line = f"{path}: {message}" if path else message
        if line not in lines:
            lines.append(line)
    return lines


def build(cls: type[C], data: Mapping | None, overrides: Sequence[str] = (),
          ) -> tuple[C | None, list[str]]:
    """Convert ``data`` (+ overrides) into ``cls``; returns ``(config or None, problems)``.

    The config is ``None`` whenever there is at least one problem.
    """
    data = _deepcopy_plain(data if data is not None else {})
    problems, applied = [], {}
    if isinstance(data, dict):
        problems, applied = apply_overrides(data, overrides, cls)
    converter = Converter(cls)
    with deferred_validation():
        obj = converter.convert(cls, data, "")
    problems += converter.problems
    if obj is not BAD:
        validate_tree(obj, "", problems)
    lines = _format(problems, applied)
    return (None if lines or obj is BAD else obj), lines


def from_dict(cls: type[C], data: Mapping | None, overrides: Sequence[str] = (),
              source: str | None = None) -> C:
    """Like :func:`build`, but raises one :class:`ConfigError` listing every problem."""
    obj, problems = build(cls, data, overrides)
    if problems:
        raise ConfigError(problems, source=source)
    return obj


def load(cls: type[C], path: str | Path | None, overrides: Sequence[str] = ()) -> C:
    """Read ``path`` (or start from the defaults when ``None``), apply overrides, validate."""
    data, file_problems = read_yaml(path) if path is not None else ({}, [])
    obj, problems = build(cls, data, overrides)
    problems = file_problems + problems
    if problems:
        raise ConfigError(problems, source=str(path) if path is not None else None)
    return obj


def _deepcopy_plain(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {k: _deepcopy_plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deepcopy_plain(v) for v in data]
    return data


# ----------------------------------------------------------------------------- YAML output

def to_dict(obj: Any) -> Any:
    """Plain data (dicts, lists, scalars) of a config tree, in field order; tuples → lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, sort_keys=False).strip()
    if text.endswith("\n..."):  # the document-end marker PyYAML adds after a plain scalar
        text = text[:-4].strip()
    return json.dumps(value) if "\n" in text else text  # JSON is YAML, and fits on one line


def dumps_yaml(cfg: Any, comments: bool = False) -> str:
    """The config as YAML that :func:`load` reads back to an equal object.

    Sections are blocks, values one line each (``structures: [heads, neurons]``); with
    ``comments=True`` every field's help text is written above it.
    """
    lines: list[str] = []

    def emit(obj: Any, indent: int) -> None:
        pad = " " * indent
        for f in dataclasses.fields(obj):
            if not f.init:
                continue
            value, help_text = getattr(obj, f.name), f.metadata.get("help", "")
            if comments and help_text:
                lines.append(f"{pad}# {help_text}")
            if dataclasses.is_dataclass(value):
                lines.append(f"{pad}{f.name}:")
                emit(value, indent + 2)
                if indent == 0:
                    lines.append("")
            else:
                lines.append(f"{pad}{f.name}: {_flow(to_dict(value))}")

    emit(cfg, 0)
    return "\n".join(lines).rstrip() + "\n"


def dump_yaml(cfg: Any, path: str | Path, comments: bool = False) -> Path:
    """Write :func:`dumps_yaml` to ``path`` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps_yaml(cfg, comments=comments), encoding="utf-8")
    return path
