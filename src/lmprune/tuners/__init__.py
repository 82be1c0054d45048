"""Tuners: adapters trained on top of frozen (and possibly masked) pretrained weights.

``apt_adapter``: APT's masked LoRA with a growing rank (Zhao et al., ICML 2024, Eq. 2).
"""
from lmprune.tuners.apt_adapter import (
    DEFAULT_TARGETS,
    ROLES,
    APTLinear,
    adapter_parameter_count,
    apply_apt,
    apt_modules,
    merge_apt,
    target_paths,
    trainable_parameters,
)

__all__ = [
    "APTLinear",
    "DEFAULT_TARGETS",
    "ROLES",
    "adapter_parameter_count",
    "apply_apt",
    "apt_modules",
    "merge_apt",
    "target_paths",
    "trainable_parameters",
]
