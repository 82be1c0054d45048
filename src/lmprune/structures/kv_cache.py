"""The KV cache across transformers versions: how a model takes it and where outputs hold it.

transformers 5.24 renamed the cache argument of every model and layer from ``past_key_values``
to ``cache`` (the old name is deprecated until 5.40) and model outputs carry it as ``cache``.
Code that calls a model step by step goes through these two helpers, so it works on every
version the project allows. Modules that *receive* a cache use
:func:`lmprune.structures.hf_code.find_cache` (that file must not import lmprune).
"""
from __future__ import annotations

import inspect
from typing import Any

from torch import nn


def cache_keyword(model: nn.Module) -> str:
    """The keyword ``model.forward`` takes the KV cache under: ``cache`` or ``past_key_values``."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_arguments(model: nn.Module, cache: Any) -> dict[str, Any]:
    """``{keyword: cache}`` to pass a cache to ``model`` (``use_cache=True`` included)."""
    return {cache_keyword(model): cache, "use_cache": True}


def output_cache(output: Any) -> Any:
    """The KV cache a model returned (``output.cache`` or ``output.past_key_values``)."""
    for key in ("cache", "past_key_values"):
        value = output.get(key) if hasattr(output, "get") else getattr(output, key, None)
        if value is not None:
            return value
    return None
