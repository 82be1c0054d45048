"""lmprune: structured pruning of pretrained language models, with honest measurements."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_pretrained"]


def load_pretrained(path, **kwargs):
    """Load a model saved by lmprune (pruned or dense) without ``trust_remote_code``.

    See :func:`lmprune.structures.export.load_pretrained`.
    """
    from lmprune.structures.export import load_pretrained as _load

    return _load(path, **kwargs)
