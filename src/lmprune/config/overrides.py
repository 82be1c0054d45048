"""``dotted.path=value`` overrides, checked against the schema before they touch the data.

The value is read as YAML (``0.3``, ``null``, ``[heads, neurons]``, ``{a: 1}``), except that a
field typed ``str`` keeps the raw text (``model.name=1234`` is the string ``"1234"``). A
mapping value merges into the section instead of replacing it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args, get_origin

import yaml

from lmprune.config.convert import (
    describe,
    field_types,
    init_fields,
    is_section,
    strip_optional,
    type_name,
    unknown_key_message,
)


def _resolve_type(root: type, parts: list[str]) -> tuple[Any, str | None]:
    """The declared type at a dotted path, or an error message if the path does not exist."""
    tp: Any = root
    for i, part in enumerate(parts):
        inner = strip_optional(tp)
        here = ".".join(parts[:i])
        if is_section(inner):
            if part not in init_fields(inner):
                return None, unknown_key_message(part, inner, root)
            tp = field_types(inner)[part]
        elif inner is dict or get_origin(inner) in (dict, Mapping):
            tp = get_args(inner)[1] if get_args(inner) else Any
        elif inner is Any:
            tp = Any
        else:
            return None, (f"{here} is {type_name(inner)}, not a section: set it whole, "
                          f"e.g. {here}=<value>")
    return tp, None


def _parse_value(raw: str, tp: Any) -> Any:
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    inner = strip_optional(tp)
    wants_str = inner is str or (get_origin(inner) is Literal
                                 and all(isinstance(a, str) for a in get_args(inner)))
    if wants_str and value is not None and not isinstance(value, (str, list, dict)):
        return raw.strip()  # model.name=1234 is a name, not a number
    return value


def _merge(base: dict, extra: Mapping) -> None:
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def apply_overrides(data: dict, overrides: Sequence[str], root: type,
                    ) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Apply ``key=value`` strings to ``data`` in place.

    Returns the problems found and ``{dotted path: override text}`` for every path set, so
    later type errors can say which override caused them.
    """
    problems: list[tuple[str, str]] = []
    applied: dict[str, str] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep or not key or not all(p.strip() for p in parts):
            problems.append(("", f"override {item!r} is not of the form key=value "
                                 f"(e.g. prune.sparsity=0.3)"))
            continue
        parts = [p.strip() for p in parts]
        key = ".".join(parts)
        tp, error = _resolve_type(root, parts)
        if error:
            problems.append((key, f"{error} (in override {item!r})"))
            continue
        value = _parse_value(raw, tp)
        node = data
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.append((".".join(parts[:depth + 1]),
                                 f"cannot apply override {item!r}: this is "
                                 f"{describe(child)} in the file, not a mapping"))
                break
            node = child
        else:
            if isinstance(value, Mapping) and isinstance(node.get(parts[-1]), dict):
                _merge(node[parts[-1]], value)
            else:
                node[parts[-1]] = value
            applied[key] = item
    return problems, applied
