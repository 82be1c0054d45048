"""Zero-shot task names are checked before a model loads, without lm-eval's slow index when
every name is known, and with it (read once, then from disk) for the others."""
from __future__ import annotations

import json

import lm_eval
import pytest

from lmprune.errors import UnknownNameError
from lmprune.evaluation import zeroshot


class FakeTaskManager:
    """lm-eval's TaskManager, counting how often the task index is built."""

    built = 0

    def __init__(self):
        FakeTaskManager.built += 1
        self.all_tasks = ["arc_easy", "hellaswag", "mmlu", "mmlu_anatomy"]


@pytest.fixture
def index(monkeypatch, tmp_path):
    """An lm-eval index of four tasks, cached under a fresh LMPRUNE_CACHE."""
    monkeypatch.setenv("LMPRUNE_CACHE", str(tmp_path))
    monkeypatch.setattr("lm_eval.tasks.TaskManager", FakeTaskManager)
    FakeTaskManager.built = 0
    zeroshot.lm_eval_task_names.cache_clear()
    yield tmp_path / "lm_eval_tasks" / f"{lm_eval.__version__}.json"
    zeroshot.lm_eval_task_names.cache_clear()


def test_known_names_never_read_the_index(index):
    zeroshot.check_tasks(["wordnet-defs", "boolq", "piqa", "arc_challenge"])
    assert FakeTaskManager.built == 0 and not index.exists()


def test_other_lm_eval_names_read_the_index_once_then_from_disk(index):
    zeroshot.check_tasks(["mmlu"])
    zeroshot.check_tasks(["mmlu_anatomy", "wordnet-defs"])
    assert FakeTaskManager.built == 1
    assert json.loads(index.read_text()) == sorted(FakeTaskManager().all_tasks)
    zeroshot.lm_eval_task_names.cache_clear()  # a new process: the file answers
    FakeTaskManager.built = 0
    zeroshot.check_tasks(["hellaswag", "mmlu"])
    assert FakeTaskManager.built == 0


def test_unknown_names_get_did_you_mean_from_every_source(index):
    with pytest.raises(UnknownNameError, match="Did you mean 'wordnet-defs'") as error:
        zeroshot.check_tasks(["wordnet-def"])
    message = str(error.value)
    assert "mmlu_anatomy" not in message  # lm-eval's thousands of names are not listed
    assert "boolq" in message and "\n" not in message
    with pytest.raises(UnknownNameError, match="Did you mean 'mmlu_anatomy'"):
        zeroshot.check_tasks(["mmlu_anatomyy"])
    assert FakeTaskManager.built == 1
