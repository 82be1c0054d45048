"""Character-level tokenizers for the tiny models, built in code (no files, no download).

Every printable ASCII character plus ``\\n`` and ``\\t`` is one token, so any ASCII text
round-trips exactly; other characters become the unknown token. Special tokens sit at the
ids each family's config expects (e.g. RoBERTa's ``<pad>`` = 1, T5's ``<pad>`` = 0 = decoder
start), so padding and labels behave as with the real tokenizers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

CHARS: tuple[str, ...] = (*(chr(i) for i in range(32, 127)), "\n", "\t")


@dataclass(frozen=True)
class SpecialTokens:
    """Special tokens in id order, the roles they fill, and how sequences are wrapped."""

    tokens: tuple[str, ...]
    roles: dict[str, str]  # e.g. {"pad_token": "[PAD]"}
    single: str  # TemplateProcessing templates
    pair: str
    model_input_names: tuple[str, ...] = ("input_ids", "attention_mask")


_BERT = SpecialTokens(
    ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
    {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
     "sep_token": "[SEP]", "mask_token": "[MASK]"},
    "[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1",
    ("input_ids", "token_type_ids", "attention_mask"),
)
_ROBERTA = SpecialTokens(
    ("<s>", "<pad>", "</s>", "<unk>", "<mask>"),
    {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
     "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"},
    "<s> $A </s>", "<s> $A </s> </s> $B </s>",
)
_T5 = SpecialTokens(
    ("<pad>", "</s>", "<unk>"),
    {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"},
    "$A </s>", "$A </s> $B </s>",
)
# LLaMA-style: <s> prepended, no </s> appended (generation decides when to stop).
_DECODER = SpecialTokens(
    ("<unk>", "<s>", "</s>", "<pad>"),
    {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
    "<s> $A", "<s> $A <s> $B",
)

#: model_type -> special-token layout. Token ids here must match the tiny configs.
FAMILY_SPECIALS: dict[str, SpecialTokens] = {
    "bert": _BERT, "roberta": _ROBERTA, "mpnet": _ROBERTA, "t5": _T5,
    "llama": _DECODER, "qwen2": _DECODER, "mistral": _DECODER,
}


def special_token_ids(family: str) -> dict[str, int]:
    """``{"pad_token_id": 0, ...}`` for a family, for building matching configs."""
    spec = FAMILY_SPECIALS[family]
    return {f"{role}_id": spec.tokens.index(tok) for role, tok in spec.roles.items()}


def build_char_tokenizer(family: str, model_max_length: int) -> PreTrainedTokenizerFast:
    """A deterministic character-level fast tokenizer laid out for ``family``."""
    from transformers import PreTrainedTokenizerFast

    spec = FAMILY_SPECIALS[family]
    vocab = {tok: i for i, tok in enumerate(spec.tokens + CHARS)}
    unk = spec.roles["unk_token"]
    backend = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    # One piece per character, whitespace included (so decode is the exact inverse).
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    pieces = {p.split(":")[0] for p in (spec.single + " " + spec.pair).split()}
    used = [t for t in spec.tokens if t in pieces]
    backend.post_processor = processors.TemplateProcessing(
        single=spec.single, pair=spec.pair, special_tokens=[(t, vocab[t]) for t in used]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        model_input_names=list(spec.model_input_names),
        **spec.roles,
    )
