"""``load_task``: a dataset name and a model family -> the :class:`~.base.Task` that trains it.

The head follows from the dataset's kind and what the family supports
(:data:`lmprune.zoo.FAMILY_TASKS`): classification uses a classification head where there is
one (encoders, decoders) and text-to-text on seq2seq models (T5); extractive QA needs an
encoder span head; summarization a seq2seq model. Families without a table entry are
assumed to support every head (transformers reports it if one is missing).
"""
from __future__ import annotations

from typing import Any

from lmprune.data import dataset_info, list_datasets
from lmprune.errors import LmpruneError, UnknownNameError
from lmprune.tasks.base import Task
from lmprune.tasks.classification import SequenceClassificationTask
from lmprune.tasks.qa import QuestionAnsweringTask
from lmprune.tasks.summarization import SummarizationTask
from lmprune.tasks.text_to_text import TextToTextClassificationTask
from lmprune.zoo import FAMILY_TASKS

#: dataset kinds lmprune can fine-tune on.
TASK_KINDS: tuple[str, ...] = ("classification", "regression", "qa", "summarization")


def trainable_datasets() -> list[str]:
    """Names of the known datasets whose kind is in :data:`TASK_KINDS`."""
    return [info.name for info in list_datasets() if info.kind in TASK_KINDS]


def _supports(family: str, head: str) -> bool:
    heads = FAMILY_TASKS.get(family)
    return heads is None or head in heads


def _unsupported(name: str, kind: str, family: str, needs: str) -> LmpruneError:
    return LmpruneError(f"cannot train {name!r} ({kind}) on a {family!r} model: it needs {needs}")


def _classification(name: str, kind: str, family: str, data_files: Any) -> Task:
    if _supports(family, "sequence-classification"):
        return SequenceClassificationTask(name, family, "sequence-classification", data_files)
    if kind == "classification" and _supports(family, "seq2seq-lm"):
        return TextToTextClassificationTask(name, family, "seq2seq-lm", data_files)
    raise _unsupported(name, kind, family, "a classification head (bert, roberta, llama, qwen2, mistral)"
                       + ("; text-to-text covers classification only" if kind == "regression" else ""))


def load_task(name: str, family: str, data_files: Any = None) -> Task:
    """The task for dataset ``name`` on a model of ``family`` (its ``config.model_type``).

    ``data_files`` reads a hub dataset from local files with the hub's raw columns (see
    :func:`lmprune.data.load_dataset`).
    """
    valid = trainable_datasets()
    try:
        info = dataset_info(name)
    except UnknownNameError:
        hint = f"Kinds that train: {', '.join(TASK_KINDS)}."
        raise UnknownNameError("training dataset", name, valid, hint=hint) from None
    if info.kind not in TASK_KINDS:
        raise LmpruneError(
            f"{name!r} is a {info.kind} dataset, which cannot be fine-tuned on: training takes "
            f"the kinds {', '.join(TASK_KINDS)} (e.g. {', '.join(valid[:4])}); {info.kind} "
            "datasets serve calibration, recovery or zero-shot evaluation"
        )
    if data_files is not None and info.offline:
        raise LmpruneError(f"{name!r} is a bundled dataset and takes no data_files=")
    if info.kind in ("classification", "regression"):
        return _classification(name, info.kind, family, data_files)
    if info.kind == "qa":
        if not _supports(family, "question-answering"):
            raise _unsupported(name, "extractive QA", family, "an encoder span head (bert, roberta)")
        return QuestionAnsweringTask(name, family, "question-answering", data_files)
    if not _supports(family, "seq2seq-lm"):
        raise _unsupported(name, "summarization", family, "an encoder-decoder model (t5)")
    return SummarizationTask(name, family, "seq2seq-lm", data_files)
