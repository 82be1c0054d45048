"""Datasets for pruning, fine-tuning and evaluation, with one normalized schema per task kind.

>>> from lmprune.data import list_datasets, load_dataset
>>> ds = load_dataset("foods", "test", max_samples=100)         # bundled, offline
>>> ds = load_dataset("sst2", "validation")                      # Hugging Face Hub
>>> ds = load_dataset("sst2", data_files={"train": "sst2.csv"})  # local files, hub columns

Columns per kind are documented in :mod:`lmprune.data.schema`; where the bundled files come
from is in ``bundled/PROVENANCE.md``.
"""
from __future__ import annotations

from lmprune.data.api import dataset_info, list_datasets, load_dataset
from lmprune.data.schema import KINDS, DatasetInfo

__all__ = ["KINDS", "DatasetInfo", "dataset_info", "list_datasets", "load_dataset"]
