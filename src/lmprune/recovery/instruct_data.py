"""Alpaca-format instruction data for LoRA recovery: prompt, tokens, labels, batches.

The recipe is LLM-Pruner's ``post_training.py`` (itself alpaca-lora's ``finetune.py``):

* the prompt is the Alpaca template (``alpaca``), or LLM-Pruner's ``--no_instruction``
  prompter (``plain``: ``"<instruction>: <input>. <output>"``; without an input LLM-Pruner
  puts two spaces before the output, we put one);
* the training text is ``prompt + output``, tokenized once (with the tokenizer's BOS) and
  truncated to its first ``max_len`` tokens; ``</s>`` is appended when it still fits;
* the loss is on the response only (LLM-Pruner's default ``train_on_inputs=False``): prompt
  tokens get label ``-100``. A response token is one whose first character lies at or after
  the end of the prompt (character offsets of a fast tokenizer), so a token merged across the
  prompt/response boundary counts as prompt. Tokenizers without offsets fall back to
  LLM-Pruner's rule: the first ``len(tokenize(prompt))`` tokens are the prompt;
* examples whose response was cut away entirely (no label left) are dropped and counted.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmprune.errors import LmpruneError

IGNORE_INDEX = -100  # label of tokens without loss (prompt and padding)
TEMPLATES = ("alpaca", "plain")
REQUIRED_COLUMNS = ("instruction", "output")  # "input" is optional (empty when absent)

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


class InstructionDataError(LmpruneError):
    """Instruction data that cannot be used (missing columns, no trainable example)."""


@dataclass
class Example:
    """One tokenized training sequence; ``labels[i]`` is ``input_ids[i]`` or ``IGNORE_INDEX``."""

    input_ids: list[int]
    labels: list[int]

    @property
    def num_targets(self) -> int:
        """Tokens that carry loss after the causal shift (the first label is never predicted)."""
        return sum(1 for t in self.labels[1:] if t != IGNORE_INDEX)


def format_prompt(instruction: str, input: str = "", template: str = "alpaca") -> str:
    """The prompt the model sees before its response (LLM-Pruner's Prompter / ZeroPrompter)."""
    if template == "alpaca":
        if input:
            return ALPACA_WITH_INPUT.format(instruction=instruction, input=input)
        return ALPACA_NO_INPUT.format(instruction=instruction)
    if template == "plain":
        text = instruction[:-1] + ":" if instruction.endswith(".") else instruction
        if not text or text[-1] not in ".:?!":
            text += ":"
        if input:
            text += " " + (input if input[-1] in ".:?!" else input + ".")
        return text
    raise LmpruneError(f"unknown prompt template {template!r}; templates: {', '.join(TEMPLATES)}")


def format_response(output: str, template: str = "alpaca") -> str:
    """What follows the prompt: the output itself (``plain`` puts a space before it)."""
    return (" " + output) if template == "plain" and output else output


def _prompt_length(tokenizer: Any, prompt: str, full: str) -> tuple[list[int], int]:
    """``(ids of prompt + response, number of leading prompt tokens)``."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(full, return_offsets_mapping=True, return_special_tokens_mask=True,
                        verbose=False)
        ids, offsets, special = enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"]
        cut = len(prompt)
        for i, ((start, _end), is_special) in enumerate(zip(offsets, special, strict=True)):
            if not is_special and start >= cut:
                return list(ids), i
        return list(ids), len(ids)
    ids = tokenizer(full, verbose=False)["input_ids"]
    return list(ids), min(len(tokenizer(prompt, verbose=False)["input_ids"]), len(ids))


def tokenize_example(tokenizer: Any, instruction: str, input: str, output: str, *,
                     max_len: int, template: str = "alpaca",
                     train_on_inputs: bool = False) -> Example:
    """Tokens and labels of one instruction/response pair (see the module docstring)."""
    prompt = format_prompt(instruction, input, template)
    ids, n_prompt = _prompt_length(tokenizer, prompt, prompt + format_response(output, template))
    ids = ids[:max_len]
    eos = tokenizer.eos_token_id
    if eos is not None and len(ids) < max_len and (not ids or ids[-1] != eos):
        ids.append(eos)  # taught to stop; a truncated response gets none (LLM-Pruner)
    n_masked = 0 if train_on_inputs else min(n_prompt, len(ids))
    return Example(ids, [IGNORE_INDEX] * n_masked + ids[n_masked:])


def check_columns(columns: Iterable[str], source: str = "the instruction data") -> None:
    """Raise :class:`InstructionDataError` naming the Alpaca columns ``columns`` lacks."""
    columns = list(columns)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise InstructionDataError(
            f"{source} has no column {', '.join(repr(c) for c in missing)} (it has: "
            f"{', '.join(columns) or 'none'}). Recovery needs Alpaca-format rows with "
            "instruction, output and optionally input; rename the columns, or use "
            "`lmprune ls datasets` for the instruction sets (alpaca, chat-pairs)")


def build_examples(tokenizer: Any, rows: Any, *, max_len: int, template: str = "alpaca",
                   train_on_inputs: bool = False) -> tuple[list[Example], int]:
    """Tokenize every row; returns ``(examples with at least one target, number dropped)``.

    ``rows`` is a ``datasets.Dataset`` or a sequence of mappings with Alpaca columns.
    """
    columns = getattr(rows, "column_names", None)
    if columns is None:
        rows = list(rows)
        columns = list(rows[0]) if rows and isinstance(rows[0], Mapping) else []
    check_columns(columns)
    kept, dropped = [], 0
    for row in rows:
        ex = tokenize_example(tokenizer, str(row["instruction"] or ""), str(row.get("input") or ""),
                              str(row["output"] or ""), max_len=max_len, template=template,
                              train_on_inputs=train_on_inputs)
        if ex.num_targets:
            kept.append(ex)
        else:
            dropped += 1
    if not kept:
        raise InstructionDataError(
            f"none of the {dropped} examples has a response token within max_len={max_len} "
            "tokens (the prompt fills it); raise recovery.max_len or use shorter prompts")
    return kept, dropped


def _is_file(name: str) -> bool:
    return bool(Path(name).suffix) or "/" in name or Path(name).exists()


def check_instruction_source(name: str) -> None:
    """Raise now if :func:`load_instruction_data` could not read ``name``: an unknown dataset,
    one that holds no instructions, or a missing, empty or unreadable local file."""
    from lmprune.data import dataset_info
    from lmprune.data.local_files import builder_for, files_for_split

    if _is_file(name):
        builder_for(files_for_split(name, "train", name))
        return
    kind = dataset_info(name).kind
    if kind != "instruction":
        raise InstructionDataError(
            f"dataset {name!r} holds {kind} data, not instructions; recovery trains on "
            "Alpaca-format instruction data (alpaca; offline: chat-pairs) or a local "
            "file with instruction/input/output columns")


def load_instruction_data(name: str, split: str = "train") -> Any:
    """A dataset name from `lmprune ls datasets`, or a local csv/json/jsonl/parquet file.

    Local files need the columns ``instruction`` and ``output`` (``input`` is optional).
    """
    from lmprune.data import load_dataset
    from lmprune.data.local_files import builder_for, files_for_split, read_files

    check_instruction_source(name)
    is_file = _is_file(name)  # dataset names have no extension and no slash
    if is_file:
        files = files_for_split(name, split, name)
        ds = read_files(files, builder_for(files))
    else:
        ds = load_dataset(name, split)
    check_columns(ds.column_names, f"{'file' if is_file else 'dataset'} {name!r}")
    return ds


def collate(examples: Sequence[Example], pad_id: int,
            multiple_of: int = 8) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (padding: ``-100``).

    The length is rounded up to ``multiple_of`` (LLM-Pruner pads to multiples of 8, which
    suits tensor cores); right padding keeps every real token's position id unchanged.
    """
    longest = max(len(e.input_ids) for e in examples)
    length = -(-longest // multiple_of) * multiple_of
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pad_token_id(tokenizer: Any) -> int:
    """The padding id (its value never matters: padded positions are masked everywhere)."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0  # LLM-Pruner sets pad_token_id = 0
