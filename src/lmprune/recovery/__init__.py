"""LoRA recovery after pruning (LLM-Pruner's recipe): ``recover(model, tokenizer, run, out)``.

>>> from lmprune.recovery import recover
>>> result = recover(model, tokenizer, run, "runs/recovered")   # merged, saved, reloadable

Files: :mod:`.instruct_data` (prompts, tokens, label masking), :mod:`.lora` (adapters,
``recover``), :mod:`.loop` (training loop on accelerate), :mod:`.checkpoint` (resume),
:mod:`.outputs` (report, loss curve, atomic output directory).
"""
from __future__ import annotations

from lmprune.recovery.instruct_data import (
    IGNORE_INDEX,
    Example,
    InstructionDataError,
    build_examples,
    format_prompt,
    tokenize_example,
)
from lmprune.recovery.lora import RecoveryResult, add_lora, merge_lora, recover, resolve_targets

__all__ = [
    "IGNORE_INDEX",
    "Example",
    "InstructionDataError",
    "RecoveryResult",
    "add_lora",
    "build_examples",
    "format_prompt",
    "merge_lora",
    "recover",
    "resolve_targets",
    "tokenize_example",
]
