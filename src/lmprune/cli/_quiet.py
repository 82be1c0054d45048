"""Third-party output a CLI user does not need, kept out unless ``--verbose`` (or ``--debug``).

While a command runs:

* Python warnings of the deprecation kinds (``FutureWarning``, ``DeprecationWarning``,
  ``PendingDeprecationWarning``) raised outside lmprune, and ``UserWarning`` raised by the
  Hugging Face libraries, are ignored (e.g. transformers' "`is_gradient_checkpointing` is
  deprecated" that peft triggers);
* the loggers of those libraries only pass errors (e.g. lm-eval's "`pretrained` model kwarg is
  not of type `str`", transformers' per-load reports);
* the progress bars of transformers ("Loading weights", "Writing model shards"), datasets
  ("Generating test split") and huggingface_hub are off.

lmprune's own messages and progress bars, and lm-eval's progress over its requests, stay.
Everything is restored when the command returns (tests run many commands in one process).
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import warnings
from collections.abc import Callable, Iterator

LIBRARIES = ("transformers", "datasets", "lm_eval", "peft", "accelerate", "huggingface_hub")
DEPRECATIONS = (FutureWarning, DeprecationWarning, PendingDeprecationWarning)
# (module, its "are bars on?" function or a "(not) disabled" one, enable, disable)
PROGRESS_BARS = (
    ("transformers.utils.logging", "is_progress_bar_enabled", "enable_progress_bar",
     "disable_progress_bar"),
    ("datasets.utils.tqdm", "!are_progress_bars_disabled", "enable_progress_bars",
     "disable_progress_bars"),
    ("huggingface_hub.utils", "!are_progress_bars_disabled", "enable_progress_bars",
     "disable_progress_bars"),
)


def _bars(module_name: str, query: str, enable: str, disable: str
          ) -> tuple[bool, Callable[[], None], Callable[[], None]] | None:
    """(bars on now, enable, disable) for one library, or None if it is not installed."""
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    negate = query.startswith("!")
    on = bool(getattr(module, query.lstrip("!"))()) != negate
    return on, getattr(module, enable), getattr(module, disable)


@contextlib.contextmanager
def library_output(verbose: bool, progress_bars: bool = True) -> Iterator[None]:
    """Keep third-party noise out of the block unless ``verbose`` (module docstring).

    ``progress_bars=False`` leaves the progress-bar switches alone, so commands that never
    load a model (``ls``, ``compare``) do not pay for importing transformers.
    """
    if verbose:
        yield
        return
    # first: importing transformers sets its logger's level
    bars = [b for spec in PROGRESS_BARS if progress_bars and (b := _bars(*spec)) is not None]
    loggers = [logging.getLogger(name) for name in LIBRARIES]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for category in DEPRECATIONS:
            warnings.filterwarnings("ignore", category=category)
            warnings.filterwarnings("default", category=category, module=r"lmprune(\.|$)")
        for library in LIBRARIES:
            warnings.filterwarnings("ignore", category=UserWarning, module=rf"{library}(\.|$)")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        for on, _, disable in bars:
            if on:
                disable()
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
            for on, enable, _ in bars:
                if on:
                    enable()
