"""Name → implementation registries, with "did you mean" errors that list every valid name.

A :class:`Registry` maps a short, user-facing name (what a YAML config or the command line
says) to an object (a class, a factory function, ...) plus a one-line help text shown by
``lmprune ls``::

    from lmprune.registry import METHODS

    @METHODS.register("random", help="drop groups uniformly at random (a baseline)")
    def prune_random(...): ...

    METHODS.register("magnitude", prune_magnitude)      # the same, as a plain call
    METHODS.get("magnitde")   # UnknownNameError: ... Did you mean 'magnitude'? Valid methods: ...

Built-in methods register themselves when their module is imported; :func:`load_builtin_methods`
imports them, so code that needs the full list (config validation, ``lmprune ls methods``)
calls it first instead of importing every method (and torch) at ``import lmprune`` time.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, NamedTuple, TypeVar, overload

from lmprune.errors import LmpruneError, UnknownNameError

T = TypeVar("T")


class DuplicateNameError(LmpruneError):
    """Two different objects registered under one name (usually two plugins clashing)."""


class Entry(NamedTuple):
    """One registered name: ``for name, obj, help in registry.items()``."""

    name: str
    obj: object
    help: str


def _first_doc_line(obj: object) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0].strip() if doc.strip() else ""


class Registry(Generic[T]):
    """A named collection of implementations of one kind (``"method"``, ``"scorer"``, ...).

    ``kind`` is used in error messages ("unknown method 'x'"); ``hint`` is appended to the
    unknown-name error, e.g. which command lists the valid names.
    """

    def __init__(self, kind: str, hint: str = ""):
        self.kind = kind
        self.hint = hint
        self._entries: dict[str, Entry] = {}

    @overload
    def register(self, name: str, obj: None = None, *, help: str = "",
                 replace: bool = False) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T, *, help: str = "", replace: bool = False) -> T: ...

    def register(self, name, obj=None, *, help="", replace=False):
        """Register ``obj`` under ``name``; without ``obj``, return a decorator.

        ``help`` defaults to the first line of the object's docstring. Registering the very
        same object twice is a no-op (a module imported twice); a *different* object under a
        taken name raises :class:`DuplicateNameError` unless ``replace=True``.
        """
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise ValueError(f"{self.kind} name must be a non-empty string without surrounding "
                             f"spaces, got {name!r}")

        def add(target: T) -> T:
            old = self._entries.get(name)
            if old is not None and old.obj is not target and not replace:
                raise DuplicateNameError(
                    f"{self.kind} {name!r} is already registered (by "
                    f"{_qualname(old.obj)}); cannot register {_qualname(target)} under the "
                    f"same name. Pick another name, or pass replace=True to override it.")
            self._entries[name] = Entry(name, target, help or _first_doc_line(target))
            return target

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (mostly for tests); unknown names raise :class:`UnknownNameError`."""
        self.get(name)
        del self._entries[name]

    def get(self, name: str) -> T:
        """The object registered as ``name``; otherwise an error with close matches."""
        try:
            return self._entries[name].obj
        except (KeyError, TypeError):
            raise UnknownNameError(self.kind, str(name), self.names(), hint=self.hint) from None

    def help(self, name: str) -> str:
        self.get(name)
        return self._entries[name].help

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[Entry]:
        """Every entry, sorted by name, as ``(name, obj, help)`` tuples."""
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"


def _qualname(obj: object) -> str:
    mod = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{mod}.{name}" if mod else name


# Pruning methods: name → the method's entry point (its signature is owned by lmprune.pruners).
METHODS: Registry = Registry("method", hint="Run `lmprune ls methods` to see them all.")

# Packages whose modules register built-in entries when imported: every direct submodule of
# these (not starting with "_") is imported by load_builtin_methods(), so adding a method is
# adding a file.
BUILTIN_METHOD_PACKAGES: tuple[str, ...] = ("lmprune.pruners",)

_loaded: set[str] = set()


def load_builtin_methods() -> Registry:
    """Import the built-in method modules so that they register into :data:`METHODS`.

    A package that does not exist (yet) is skipped; an error *inside* one propagates, so a
    broken method is a loud failure rather than a silently missing name.
    """
    for package in BUILTIN_METHOD_PACKAGES:
        if package in _loaded:
            continue
        try:
            pkg = importlib.import_module(package)
        except ModuleNotFoundError as exc:
            if exc.name == package or package.startswith(f"{exc.name}."):
                continue  # the package itself (or its parent) is absent
            raise
        for info in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package}.{info.name}")
        _loaded.add(package)
    return METHODS
