"""Zero-shot accuracy through lm-evaluation-harness on an in-memory model.

Tasks are lm-eval task names (``boolq``, ``piqa``, ``hellaswag``, ``winogrande``, ``arc_easy``,
``arc_challenge``, ``openbookqa``: these need the hub for their data) plus offline tasks that
lmprune defines from its bundled data (``wordnet-defs``). The model is wrapped in lm-eval's
``HFLM`` as it is in memory (masked, pruned or dense), so no save/reload is needed.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import tempfile
from pathlib import Path

from lmprune.errors import LmpruneError, UnknownNameError

# Offline multiple-choice tasks: lm-eval task name -> (bundled dataset, split).
OFFLINE_TASKS = {"wordnet-defs": ("wordnet-defs", "test")}
PAPER_TASKS = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")

_TASK_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data_file}
output_type: multiple_choice
test_split: test
doc_to_text: "{{{{query}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
  source: lmprune bundled dataset {dataset}/{split}
"""


@functools.cache
def lm_eval_task_names() -> frozenset[str]:
    """Every task, group and tag name lm-eval knows, cached on disk per lm-eval version.

    Indexing lm-eval's ~15,000 task files takes 20-45 s on a small CPU; the names are kept in
    ``<lmprune cache>/lm_eval_tasks/<version>.json`` so that happens once per installed version.
    """
    import lm_eval

    from lmprune.zoo.cache import cache_root

    path = cache_root() / "lm_eval_tasks" / f"{lm_eval.__version__}.json"
    try:
        return frozenset(json.loads(path.read_text()))
    except (OSError, ValueError):
        pass
    from lm_eval.tasks import TaskManager

    names = sorted(TaskManager().all_tasks)
    try:  # written whole, then renamed: a concurrent reader never sees half a file
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(handle, "w") as stream:
            json.dump(names, stream)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs the next run the same scan
    return frozenset(names)


def check_tasks(tasks: list[str]) -> None:
    """Raise for a task name that neither lmprune nor lm-eval knows, with did-you-mean.

    Known names (offline and the paper's) are accepted at once; lm-eval's index is read only
    when another name is asked for.
    """
    unknown = [t for t in tasks if t not in OFFLINE_TASKS and t not in PAPER_TASKS]
    if not unknown:
        return
    names = lm_eval_task_names()
    for task in unknown:
        if task not in names:
            raise UnknownNameError(
                "zero-shot task", task, [*OFFLINE_TASKS, *PAPER_TASKS, *names],
                listed=[*OFFLINE_TASKS, *PAPER_TASKS],
                hint=f"{', '.join(OFFLINE_TASKS)} runs offline, the others need the Hugging "
                     "Face hub; any lm-evaluation-harness task name works too.")


def write_offline_tasks(directory: Path, tasks: list[str]) -> None:
    """Write lm-eval YAML task definitions (and their data as JSON lines) for offline tasks."""
    from lmprune.data import load_dataset

    for task in tasks:
        dataset, split = OFFLINE_TASKS[task]
        rows = load_dataset(dataset, split=split)
        data_file = directory / f"{task}.jsonl"
        with data_file.open("w") as handle:
            for row in rows:
                handle.write(json.dumps({"query": row["query"], "choices": row["choices"],
                                         "label": row["label"]}) + "\n")
        (directory / f"{task}.yaml").write_text(_TASK_YAML.format(
            task=task, data_file=data_file, dataset=dataset, split=split))


@contextlib.contextmanager
def _quiet_git_hash():
    """lm-eval records ``git describe`` of the working directory and lets git print
    "fatal: not a git repository" on stderr outside one; ask git quietly instead."""
    import lm_eval.evaluator as evaluator

    def git_hash() -> str | None:
        try:
            out = subprocess.run(["git", "describe", "--always"], capture_output=True,
                                 text=True, check=False)
        except OSError:
            return None
        return out.stdout.strip() or None

    original = getattr(evaluator, "get_git_commit_hash", None)
    if original is None:  # another lm-eval layout: leave it alone
        yield
        return
    evaluator.get_git_commit_hash = git_hash
    try:
        yield
    finally:
        evaluator.get_git_commit_hash = original


def check_answer_lengths(tokenizer, tasks: list[str], max_length: int,
                         limit: int | None = None) -> None:
    """Raise before any scoring when an offline task has an answer choice longer than the
    model's context (lm-eval would stop on a bare assertion halfway through); with ``limit``,
    only the first ``limit`` questions (those lm-eval scores) are checked."""
    from lmprune.data import load_dataset

    for task in tasks:
        dataset, split = OFFLINE_TASKS[task]
        rows = load_dataset(dataset, split=split)
        rows = rows if limit is None else rows[:limit]
        choices = [c for cs in rows["choices"] for c in cs]
        lengths = [len(ids) for ids in tokenizer([" " + c for c in choices],
                                                 add_special_tokens=False)["input_ids"]]
        longest = max(lengths, default=0)
        if longest > max_length:
            raise LmpruneError(
                f"zero-shot task {task!r} has answer choices of up to {longest} tokens with "
                f"this tokenizer, more than the model's context of {max_length} tokens; drop "
                f"it from eval.zero_shot for this model (eval.zero_shot=[] skips zero-shot "
                f"accuracy)")


def zero_shot(model, tokenizer, tasks: list[str], limit: int | None = None,
              batch_size: int = 8, max_length: int | None = None) -> dict[str, dict]:
    """Accuracy per task: ``{task: {"acc", "acc_norm", "acc_stderr", "n"}}``."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    check_tasks(tasks)
    offline = [t for t in tasks if t in OFFLINE_TASKS]
    with tempfile.TemporaryDirectory(prefix="lmprune-tasks-") as tmp:
        write_offline_tasks(Path(tmp), offline)
        # indexing lm-eval's thousands of task files takes ~30 s on a small CPU: skip it when
        # every task is one of ours
        manager = TaskManager(include_path=tmp, include_defaults=len(offline) < len(tasks))
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
                  max_length=max_length)
        check_answer_lengths(tokenizer, offline, lm.max_length, limit)
        try:
            with _quiet_git_hash():
                output = lm_eval.simple_evaluate(model=lm, tasks=list(tasks),
                                                 task_manager=manager, limit=limit,
                                                 log_samples=False)
        except (ConnectionError, OSError) as err:
            raise LmpruneError(f"could not load the data of {tasks}: {err}. The paper's tasks "
                               f"need the Hugging Face hub; offline, use {list(OFFLINE_TASKS)}") from err
    results = {}
    for task in tasks:
        metrics = output["results"][task]
        results[task] = {
            "acc": metrics.get("acc,none"), "acc_norm": metrics.get("acc_norm,none"),
            "acc_stderr": metrics.get("acc_stderr,none"),
            "n": output.get("n-samples", {}).get(task, {}).get("effective"),
        }
    return results
