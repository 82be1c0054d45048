"""Architecture adapters: everything lmprune knows about a model family, as data.

``describe(model)`` turns a stock Hugging Face model into a :class:`ModelStructure`: the list
of prunable sites (attention blocks, FFN blocks, layers, the hidden channel) with the module
paths and sizes that masks, removal and counting need.
"""
from lmprune.arch.spec import AttentionSite, FFNSite, HiddenSite, LayerSite, ModelStructure
from lmprune.arch.describe import SUPPORTED_MODEL_TYPES, describe

__all__ = [
    "AttentionSite",
    "FFNSite",
    "HiddenSite",
    "LayerSite",
    "ModelStructure",
    "SUPPORTED_MODEL_TYPES",
    "describe",
]
