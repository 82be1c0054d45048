"""Building blocks for config dataclasses: :func:`param` fields and the :class:`Section` base.

The convention every config dataclass follows (peft-style, but collecting instead of raising
on the first problem):

* each field has a ``help`` text in its metadata (``param(0.2, "fraction of ...")``), which
  ``lmprune validate --comments`` prints next to the value;
* a dataclass may define ``validate(self) -> list[str]`` returning *every* problem of its own
  fields, each written ``"<field>: <what is wrong and what is allowed>"``. Nested sections
  validate themselves; the loader prefixes their problems with the dotted path
  (``prune.sparsity: ...``) and reports all of them in one :class:`~lmprune.errors.ConfigError`;
* :class:`Section` runs ``validate()`` in ``__post_init__``, so a config built in Python
  (``PruneConfig(sparsity=2)``) fails at once too. While the loader builds a whole tree it
  defers those checks (:func:`deferred_validation`) and collects them level by level instead.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from lmprune.errors import ConfigError

_DEFERRED: ContextVar[bool] = ContextVar("lmprune_config_validation_deferred", default=False)


@contextlib.contextmanager
def deferred_validation() -> Iterator[None]:
    """Inside this block, :class:`Section` objects skip their ``__post_init__`` validation."""
    token = _DEFERRED.set(True)
    try:
        yield
    finally:
        _DEFERRED.reset(token)


def param(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A dataclass field with a help text; mutable defaults (lists, dicts, sections) are copied.

    ``param(help="...")`` without a default makes a required field.
    """
    metadata = {**kwargs.pop("metadata", {}), "help": help}
    if default is dataclasses.MISSING or isinstance(default, (int, float, str, bool, tuple,
                                                             type(None))):
        return dataclasses.field(default=default, metadata=metadata, **kwargs)
    return dataclasses.field(default_factory=lambda: copy.deepcopy(default),
                             metadata=metadata, **kwargs)


def section(cls: type, help: str = "") -> Any:
    """A nested-section field whose default is ``cls()``."""
    return dataclasses.field(default_factory=cls, metadata={"help": help})


def field_help(cls_or_obj: Any) -> dict[str, str]:
    """``{field name: help text}`` of a config dataclass (empty strings where none is given)."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls_or_obj)}


class Section:
    """Base for config dataclasses: validates itself on construction (unless deferred).

    Subclasses are ``@dataclass`` classes that override :meth:`validate`. A subclass that
    needs its own ``__post_init__`` must call ``super().__post_init__()`` at its end.
    """

    def validate(self) -> list[str]:
        """Every problem of this section's own fields, as ``"<field>: <message>"``."""
        return []

    def __post_init__(self) -> None:
        if _DEFERRED.get():
            return
        problems = self.validate()
        if problems:
            raise ConfigError(problems, source=type(self).__name__)
