"""Plain data (parsed YAML) → typed values and nested config dataclasses, collecting problems.

Supported field types: ``int``, ``float`` (an int is accepted; so is a numeric string such as
``1e-3``, which YAML 1.1 reads as a string), ``str``, ``bool``, ``X | None``, other unions
(first matching arm wins), ``Literal[...]``, ``list[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``,
``dict[K, V]``, ``Any`` and nested dataclasses. Conversion is strict otherwise: ``1.0`` is not
an int and ``"3"`` is not a number, so typos surface here rather than deep inside a run.

Problems are ``(dotted path, message)`` pairs; nothing raises here (see :mod:`.loader`).
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin

from lmprune.errors import ConfigError

BAD = object()  # marks a value that failed conversion (its problem is already recorded)
_NONE = type(None)
_PATH_PREFIX = re.compile(r"^([A-Za-z_][\w.\[\]-]*): (.*)$", re.S)

# ----------------------------------------------------------------------------- type helpers

@cache
def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def init_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def strip_optional(tp: Any) -> Any:
    """``X | None`` → ``X``; anything else unchanged."""
    if _is_union(tp):
        arms = [a for a in get_args(tp) if a is not _NONE]
        if len(arms) == 1:
            return arms[0]
    return tp


def is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def type_name(tp: Any) -> str:
    """How a type is named in error messages ("list of string", "number or null", ...)."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return "anything"
    if tp is _NONE:
        return "null"
    if _is_union(tp):
        return " or ".join(type_name(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if is_section(tp):
        return f"a mapping of {tp.__name__} fields"
    if tp is list or origin in (list, Sequence):
        return f"list of {type_name(args[0])}" if args else "list"
    if tp is tuple or origin is tuple:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return f"list of {type_name(args[0])}" if args else "list"
        return f"list of {len(args)} items ({', '.join(type_name(a) for a in args)})"
    if tp is dict or origin in (dict, Mapping):
        return "mapping"
    names = {bool: "true or false", int: "integer", float: "number", str: "string"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def describe(value: Any) -> str:
    """A short description of a value for messages: ``string 'abc'``, ``null``, ``number 1.5``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    label = {int: "integer", float: "number", str: "string", list: "list", tuple: "list",
             dict: "mapping"}.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{label} {text if len(text) <= 60 else text[:57] + '...'}"


def join_path(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _close(name: Any, valid: Sequence[str]) -> list[str]:
    return difflib.get_close_matches(str(name), list(valid), n=3, cutoff=0.6)


def _leaf_paths(cls: type, prefix: str = "") -> list[str]:
    """Every dotted field path of a dataclass tree (sections included)."""
    out = []
    for name in init_fields(cls):
        path = join_path(prefix, name)
        out.append(path)
        inner = strip_optional(field_types(cls)[name])
        if is_section(inner):
            out.extend(_leaf_paths(inner, path))
    return out


def unknown_key_message(key: Any, cls: type, root: type) -> str:
    valid = list(init_fields(cls))
    msg = "unknown key."
    close = _close(key, valid)
    if not close:  # maybe the key belongs to another section: `sparsity:` at the top level
        elsewhere = [p for p in _leaf_paths(root) if p.rsplit(".", 1)[-1] == str(key)]
        close = elsewhere or _close(key, [p for p in _leaf_paths(root) if "." in p])
    if close:
        msg += f" Did you mean {', '.join(repr(c) for c in close)}?"
    return msg + f" Valid keys here: {', '.join(valid)}."


# ------------------------------------------------------------------------------- conversion

class Converter:
    """Converts plain data to typed values, recording ``(path, message)`` problems."""

    def __init__(self, root: type):
        self.root = root
        self.problems: list[tuple[str, str]] = []

    def fail(self, path: str, message: str) -> Any:
        self.problems.append((path, message))
        return BAD

    def mismatch(self, tp: Any, value: Any, path: str) -> Any:
        return self.fail(path, f"expected {type_name(tp)}, got {describe(value)}")

    def convert(self, tp: Any, value: Any, path: str) -> Any:
        origin, args = get_origin(tp), get_args(tp)
        if tp is Any or tp is object:
            return value
        if _is_union(tp):
            return self._union(tp, args, value, path)
        if origin is Literal:
            if any(type(value) is type(a) and value == a for a in args):
                return value
            close = _close(value, [a for a in args if isinstance(a, str)])
            hint = f". Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            return self.fail(path, f"expected {type_name(tp)}, got {describe(value)}{hint}")
        if is_section(tp):
            return self._section(tp, value, path)
        if tp is bool:
            return value if isinstance(value, bool) else self.mismatch(tp, value, path)
        if tp is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
            return value if ok else self.mismatch(tp, value, path)
        if tp is float:
            return self._float(value, path)
        if tp is str:
            return value if isinstance(value, str) else self.mismatch(tp, value, path)
        if tp in (list, tuple) or origin in (list, tuple, Sequence):
            return self._sequence(tp, origin or tp, args, value, path)
        if tp is dict or origin in (dict, Mapping):
            return self._mapping(tp, args, value, path)
        if isinstance(tp, type):
            return value if isinstance(value, tp) else self.mismatch(tp, value, path)
        return value  # an annotation we do not understand: accept rather than reject

    def _union(self, tp: Any, args: tuple, value: Any, path: str) -> Any:
        arms = [a for a in args if a is not _NONE]
        if value is None:
            return None if len(arms) < len(args) else self.mismatch(tp, value, path)
        if len(arms) == 1:  # Optional[X]: X's own, more precise messages
            return self.convert(arms[0], value, path)
        for arm in arms:
            trial = Converter(self.root)
            result = trial.convert(arm, value, path)
            if result is not BAD:
                return result
        return self.mismatch(tp, value, path)

    def _float(self, value: Any, path: str) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` as a string
            try:
                return float(value)
            except ValueError:
                pass
        return self.mismatch(float, value, path)

    def _sequence(self, tp: Any, origin: Any, args: tuple, value: Any, path: str) -> Any:
        if not isinstance(value, (list, tuple)):
            hint = " (write a list as [a, b])" if isinstance(value, str) else ""
            return self.fail(path, f"expected {type_name(tp)}, got {describe(value)}{hint}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                return self.mismatch(tp, value, path)
            item_types = list(args)
        else:
            item_types = [args[0] if args else Any] * len(value)
        items = [self.convert(t, v, f"{path}[{i}]")
                 for i, (t, v) in enumerate(zip(item_types, value, strict=True))]
        if any(i is BAD for i in items):
            return BAD
        return tuple(items) if origin is tuple else items

    def _mapping(self, tp: Any, args: tuple, value: Any, path: str) -> Any:
        if not isinstance(value, Mapping):
            return self.mismatch(tp, value, path)
        key_t, val_t = args if args else (Any, Any)
        out = {}
        for k, v in value.items():
            key = self.convert(key_t, k, join_path(path, k))
            val = self.convert(val_t, v, join_path(path, k))
            if key is not BAD and val is not BAD:
                out[key] = val
        return out if len(out) == len(value) else BAD

    def _section(self, cls: type, value: Any, path: str) -> Any:
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            return self.mismatch(cls, value, path)
        fields, hints = init_fields(cls), field_types(cls)
        kwargs = {}
        for key, raw in value.items():
            if key not in fields:
                self.fail(join_path(path, key), unknown_key_message(key, cls, self.root))
                continue
            converted = self.convert(hints[key], raw, join_path(path, key))
            if converted is not BAD:
                kwargs[key] = converted
        # A field that failed keeps its default, so the section can still be built and its
        # other fields validated; only a required field without a value blocks construction.
        blocked = False
        for name, f in fields.items():
            if name not in kwargs and not _has_default(f):
                blocked = True
                if name not in value:
                    help_text = f.metadata.get("help", "")
                    self.fail(join_path(path, name), "missing required field"
                              + (f" ({help_text})" if help_text else ""))
        if blocked:
            return BAD
        try:
            return cls(**kwargs)
        except ConfigError as exc:  # a plain dataclass validating in __post_init__
            for p in exc.problems:
                self.problems.append(split_path(path, p))
        except (TypeError, ValueError) as exc:
            self.fail(path, str(exc))
        return BAD


def split_path(prefix: str, problem: str) -> tuple[str, str]:
    """``"sparsity: must be ..."`` under ``prune`` → ``("prune.sparsity", "must be ...")``."""
    m = _PATH_PREFIX.match(problem)
    if m:
        return join_path(prefix, m.group(1)), m.group(2)
    return prefix, problem


def validate_tree(obj: Any, path: str, problems: list[tuple[str, str]]) -> None:
    """Call ``validate()`` on every dataclass in the tree, prefixing with the dotted path."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        check = getattr(obj, "validate", None)
        if callable(check):
            problems.extend(split_path(path, p) for p in check())
        for f in dataclasses.fields(obj):
            validate_tree(getattr(obj, f.name), join_path(path, f.name), problems)
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            validate_tree(item, f"{path}[{i}]", problems)
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            validate_tree(v, join_path(path, k), problems)
