"""Configuration: dataclass schemas, YAML loading with ``key=value`` overrides, validation.

    from lmprune.config import load_config
    cfg = load_config("demo", ["prune.sparsity=0.5"])   # a shipped name or a path
    cfg.prune.sparsity                                   # 0.5

Every problem (file and overrides together) is raised at once as one
:class:`~lmprune.errors.ConfigError`. See :mod:`lmprune.config.loader` for the rules and
:mod:`lmprune.config.schema` for the fields.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lmprune.config.loader import (
    build,
    dump_yaml,
    dumps_yaml,
    from_dict,
    load,
    to_dict,
)
from lmprune.config.schema import (
    STRUCTURES,
    DataConfig,
    ModelConfig,
    OutputConfig,
    PruneConfig,
    RunConfig,
)
from lmprune.config.section import Section, field_help, param, section
from lmprune.config.shipped import ShippedConfig, resolve_config, shipped_configs
from lmprune.errors import ConfigError, LmpruneError

__all__ = [
    "STRUCTURES", "ConfigError", "DataConfig", "ModelConfig", "OutputConfig", "PruneConfig",
    "RunConfig", "Section", "ShippedConfig", "build", "dump_yaml", "dumps_yaml", "field_help",
    "from_dict", "load", "load_config", "param", "resolve_config", "section",
    "shipped_configs", "to_dict", "validate_file",
]


def load_config(path: str | Path | None, overrides: Sequence[str] = (),
                schema: type = RunConfig):
    """Load a run config from a path or shipped name (``None``: the defaults) + overrides."""
    return load(schema, resolve_config(path) if path is not None else None, overrides)


def validate_file(path: str | Path | None, overrides: Sequence[str] = (),
                  schema: type = RunConfig) -> list[str]:
    """Every problem of a config (+ overrides) as strings; an empty list means valid."""
    try:
        load_config(path, overrides, schema)
    except ConfigError as exc:
        return exc.problems
    except LmpruneError as exc:
        return [str(exc)]
    return []
