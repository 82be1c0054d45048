"""Fine-tuning tasks: tokenization into features, batching with targets, task metrics.

>>> from lmprune.tasks import load_task
>>> task = load_task("foods", "bert")          # dataset name, config.model_type
>>> task.head, task.metric, task.num_labels
('sequence-classification', 'accuracy', 2)
>>> split = task.encode(tokenizer, "validation", max_len=128)
>>> batch = task.collate(split.features[:8])   # model(**batch).loss is the task loss
>>> task.evaluate(model, split)                # {"accuracy": ..., "f1": ..., "mcc": ...}

All metrics are fractions (in [0, 1]; correlations in [-1, 1]), never percentages.
"""
from lmprune.tasks.base import EncodedSplit, Task
from lmprune.tasks.loading import TASK_KINDS, load_task, trainable_datasets

__all__ = ["TASK_KINDS", "EncodedSplit", "Task", "load_task", "trainable_datasets"]
