"""Tasks (which head sits on the model) and which tasks each model family supports.

Kept as data tables keyed by ``model_type`` so a new family is one line, not new code.
"""
from __future__ import annotations

from typing import Any

from lmprune.errors import LmpruneError

#: task name -> the transformers Auto class that builds/loads a model for it.
AUTO_CLASSES: dict[str, str] = {
    "base": "AutoModel",
    "sequence-classification": "AutoModelForSequenceClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "causal-lm": "AutoModelForCausalLM",
    "seq2seq-lm": "AutoModelForSeq2SeqLM",
}
TASKS: tuple[str, ...] = tuple(AUTO_CLASSES)

_ENCODER_TASKS = ("base", "sequence-classification", "question-answering")
_DECODER_TASKS = ("base", "causal-lm", "sequence-classification")

#: model_type -> tasks lmprune supports for it. T5 classification is done as text-to-text
#: (seq2seq-lm), as in the T5 paper, so T5's classification heads are not offered.
FAMILY_TASKS: dict[str, tuple[str, ...]] = {
    "bert": _ENCODER_TASKS,
    "roberta": _ENCODER_TASKS,
    "mpnet": _ENCODER_TASKS,
    "t5": ("base", "seq2seq-lm"),
    "llama": _DECODER_TASKS,
    "qwen2": _DECODER_TASKS,
    "mistral": _DECODER_TASKS,
}

DEFAULT_TASKS: dict[str, str] = {
    "bert": "sequence-classification",
    "roberta": "sequence-classification",
    "mpnet": "sequence-classification",
    "t5": "seq2seq-lm",
    "llama": "causal-lm",
    "qwen2": "causal-lm",
    "mistral": "causal-lm",
}


def resolve_task(family: str, task: str | None, *, what: str) -> str:
    """Return the task to use for a model of ``family``; ``None`` means its default.

    ``what`` names the model in error messages. Families lmprune has no table for accept
    any known task (transformers will complain if the head does not exist).
    """
    if task is not None and task not in AUTO_CLASSES:
        raise LmpruneError(f"unknown task {task!r} for {what}. Valid tasks: {', '.join(TASKS)}.")
    valid = FAMILY_TASKS.get(family)
    if task is None:
        return DEFAULT_TASKS.get(family, "base")
    if valid is not None and task not in valid:
        raise LmpruneError(
            f"task {task!r} is not supported for {what} (family {family!r}). "
            f"Valid tasks: {', '.join(valid)}."
        )
    return task


def auto_class(task: str) -> Any:
    """The transformers Auto class for ``task`` (imported lazily: transformers is slow)."""
    import transformers

    return getattr(transformers, AUTO_CLASSES[task])


def head_kwargs(task: str, config: Any, num_labels: int | None) -> dict[str, Any]:
    """Extra ``from_pretrained`` kwargs for the task head of a checkpoint with ``config``.

    ``num_labels=None`` keeps a saved classification head's label count (2 for a new head);
    a different explicit count replaces the saved head by a freshly initialized one.
    """
    if task != "sequence-classification":
        return {}
    archs = getattr(config, "architectures", None) or []
    has_head = any(a.endswith("ForSequenceClassification") for a in archs)
    saved = config.num_labels if has_head else None
    if num_labels is None:
        return {"num_labels": saved or 2}
    if saved is not None and saved != num_labels:
        return {"num_labels": num_labels, "ignore_mismatched_sizes": True}
    return {"num_labels": num_labels}
