"""Tiny random models built from configs: milliseconds per forward, no download.

Sizes are the smallest that still exercise every structure a pruner touches: several
heads, grouped-query attention (8 query heads sharing 2 KV heads), a gated FFN, tied and
untied embeddings, encoder-decoder cross-attention.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from lmprune.errors import LmpruneError
from lmprune.zoo.char_tokenizer import build_char_tokenizer, special_token_ids
from lmprune.zoo.registry import get_info, is_tiny
from lmprune.zoo.tasks import auto_class, resolve_task

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerFast

_VOCAB = 128


def _bert(family: str) -> PretrainedConfig:
    from transformers import BertConfig

    return BertConfig(vocab_size=_VOCAB, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=64,
                      max_position_embeddings=64, type_vocab_size=2,
                      **special_token_ids(family))


def _roberta(family: str) -> PretrainedConfig:
    from transformers import RobertaConfig

    # RoBERTa positions start at pad_token_id + 1 = 2, so 64 usable positions need 66.
    return RobertaConfig(vocab_size=_VOCAB, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64,
                         max_position_embeddings=66, type_vocab_size=1,
                         **special_token_ids(family))


def _mpnet(family: str) -> PretrainedConfig:
    from transformers import MPNetConfig

    # MPNet's embeddings fix the padding index at 1 and start positions at 2 (as RoBERTa).
    return MPNetConfig(vocab_size=_VOCAB, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=4, intermediate_size=64, max_position_embeddings=66,
                       relative_attention_num_buckets=32, **special_token_ids(family))


def _t5(gated: bool) -> Callable[[str], PretrainedConfig]:
    def make(family: str) -> PretrainedConfig:
        from transformers import T5Config

        return T5Config(vocab_size=_VOCAB, d_model=32, d_kv=8, num_heads=4, num_layers=2,
                        num_decoder_layers=2, d_ff=64,
                        feed_forward_proj="gated-gelu" if gated else "relu",
                        tie_word_embeddings=not gated, decoder_start_token_id=0,
                        **special_token_ids(family))

    return make


def _decoder(family: str) -> PretrainedConfig:
    from transformers import AutoConfig

    return AutoConfig.for_model(
        family, vocab_size=_VOCAB, hidden_size=64, intermediate_size=96,
        num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2, head_dim=8,
        max_position_embeddings=128, tie_word_embeddings=False,
        **special_token_ids(family),
    )


_CONFIGS: dict[str, Callable[[str], PretrainedConfig]] = {
    "tiny-bert": _bert,
    "tiny-roberta": _roberta,
    "tiny-mpnet": _mpnet,
    "tiny-t5": _t5(gated=False),
    "tiny-t5-gated": _t5(gated=True),
    "tiny-llama": _decoder,
    "tiny-qwen2": _decoder,
    "tiny-mistral": _decoder,
}
# Longest input the tokenizer admits (RoBERTa/BERT: learned positions; others: a sane cap).
_MAX_LENGTH = {"bert": 64, "roberta": 64, "mpnet": 64, "t5": 128, "llama": 128, "qwen2": 128, "mistral": 128}


def _check_tiny(name: str) -> str:
    info = get_info(name)  # UnknownNameError for names that are no alias at all
    if not is_tiny(name):
        raise LmpruneError(f"{name!r} is a real model, not a tiny one; use load_model({name!r}).")
    return info.family


def tiny_config(name: str, *, num_labels: int = 2) -> PretrainedConfig:
    """The config of a tiny alias (fresh object each call)."""
    family = _check_tiny(name)
    config = _CONFIGS[name](family)
    config.num_labels = num_labels
    return config


def build_tiny(name: str, task: str | None = None, *, seed: int = 0,
               num_labels: int = 2) -> PreTrainedModel:
    """Build a tiny alias with random weights: fp32, eval mode, identical for equal seeds.

    The global torch RNG is forked, so building a model does not change the caller's
    random stream.
    """
    family = _check_tiny(name)
    task = resolve_task(family, task, what=name)
    config = tiny_config(name, num_labels=num_labels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = auto_class(task).from_config(config, dtype=torch.float32)
        if family == "t5" and not config.scale_decoder_outputs:
            _untie_t5_lm_head(model)
    return model.eval()


def _untie_t5_lm_head(model: PreTrainedModel) -> None:
    """Give a T5 v1.1-style model its own output embedding, as real v1.1 checkpoints have.

    transformers 5 forces ``T5Config.tie_word_embeddings`` to True (passing False only turns
    off the decoder-output scaling, stored as ``scale_decoder_outputs``) and ties ``lm_head``
    to ``shared`` at construction. ``from_pretrained`` unties them when a checkpoint holds two
    different matrices; this does the same for a model built from a config.
    """
    head = getattr(model, "lm_head", None)
    if head is None or head.weight is not model.shared.weight:
        return
    weight = torch.empty_like(model.shared.weight)
    # T5's own init for an untied lm_head.
    torch.nn.init.normal_(weight, mean=0.0, std=model.config.initializer_factor)
    head.weight = torch.nn.Parameter(weight)
    model.all_tied_weights_keys.pop("lm_head.weight", None)  # else save_pretrained drops it


def build_tiny_tokenizer(name: str) -> PreTrainedTokenizerFast:
    """The character-level tokenizer that matches a tiny alias's vocabulary and special ids."""
    family = _check_tiny(name)
    return build_char_tokenizer(family, model_max_length=_MAX_LENGTH[family])
