"""Hugging Face hub ids: use the local HF cache when it has the model, fail fast when offline.

Without this, ``from_pretrained`` on a machine with no network retries for ~25 s before it
gives up with a generic message.
"""
from __future__ import annotations

import os
import re
import socket
from typing import Any
from urllib.parse import urlparse

from lmprune.errors import LmpruneError
from lmprune.zoo.registry import HUB_HINT, alias_names

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_TRUE = {"1", "true", "yes", "on"}


def looks_like_hub_id(name: str) -> bool:
    """``org/name`` (one slash, no path punctuation such as ``./`` or a leading ``/``)."""
    return bool(_HUB_ID.fullmatch(name))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub endpoint accepts a TCP connection (True when a proxy hides the answer)."""
    offline_flags = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    if any(os.environ.get(v, "").lower() in _TRUE for v in offline_flags):
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a direct probe says nothing; let from_pretrained try through the proxy
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def offline_error(name: str, cause: object = None) -> LmpruneError:
    because = f" ({cause})" if cause else ""
    return LmpruneError(
        f"cannot load {name!r}: it is neither an lmprune alias nor an existing local directory, "
        f"and the Hugging Face hub is not reachable{because}. {HUB_HINT} "
        f"Offline aliases: {', '.join(alias_names())}."
    )


def hub_load_kwargs(name: str) -> dict[str, Any]:
    """``{"local_files_only": True}`` when the hub id's config is in the local HF cache, ``{}``
    when it is not but the hub is reachable, and an ``LmpruneError`` when neither holds.
    """
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name, local_files_only=True)
        return {"local_files_only": True}
    except (OSError, ValueError):
        pass
    if not hub_reachable():
        raise offline_error(name)
    return {}
