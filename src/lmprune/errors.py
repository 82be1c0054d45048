"""Exceptions raised by lmprune.

Every error a user can trigger says what is wrong *and* how to fix it; the CLI prints
``LmpruneError`` messages without a traceback.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class LmpruneError(Exception):
    """Base class: a problem the user can fix (bad input, unsupported model, ...)."""


class ConfigError(LmpruneError):
    """One or more configuration problems, reported all at once."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        where = f" in config {source}" if source else ""
        if len(self.problems) == 1:  # one line, like every other error
            super().__init__(f"{self.problems[0]}" + (f" ({where.strip()})" if where else ""))
            return
        head = f"{len(self.problems)} problem(s){where}"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in self.problems))


class UnknownNameError(LmpruneError):
    """A name (model alias, dataset, method, ...) that is not registered.

    ``listed``: the names the message lists when ``valid`` is too long to print (the
    did-you-mean suggestions still come from all of ``valid``).
    """

    def __init__(self, kind: str, name: str, valid: Iterable[str], hint: str = "",
                 listed: Iterable[str] | None = None):
        valid = sorted(valid)
        close = difflib.get_close_matches(name, valid, n=3)
        msg = f"unknown {kind} {name!r}."
        if close:
            msg += f" Did you mean {', '.join(repr(c) for c in close)}?"
        msg += f" Valid {kind}s: {', '.join(valid if listed is None else listed)}."
        if hint:
            msg += " " + hint
        self.kind, self.name, self.valid = kind, name, valid
        super().__init__(msg)


class UnsupportedModelError(LmpruneError):
    """The model's architecture has no lmprune adapter."""


class MaskError(LmpruneError):
    """A mask of the wrong shape, range or combination."""


class PlanError(LmpruneError):
    """A pruning plan that does not fit the model it is applied to."""
