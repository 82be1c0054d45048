"""``list_datasets`` and ``load_dataset``: one entry point for every dataset lmprune knows.

Names resolve first to the bundled offline suite, then to the hub benchmark table. Whatever
the origin, the result has the normalized columns of its kind (see :mod:`.schema`).
"""
from __future__ import annotations

import random

import datasets

from lmprune.data.bundled import BUNDLED, load_bundled
from lmprune.data.hub import load_hub_dataset
from lmprune.data.hub_tables import HUB_DATASETS, HubSpec
from lmprune.data.local_files import DataFiles
from lmprune.data.schema import DatasetInfo
from lmprune.errors import LmpruneError, UnknownNameError


def _hub_info(spec: HubSpec) -> DatasetInfo:
    return DatasetInfo(
        name=spec.name,
        kind=spec.kind,
        description=spec.description,
        offline=False,
        splits=spec.splits,
        source=spec.source,
        labels=spec.labels,
    )


def list_datasets() -> list[DatasetInfo]:
    """Every known dataset: the bundled offline suite first, then the hub benchmarks."""
    return [s.info for s in BUNDLED.values()] + [_hub_info(s) for s in HUB_DATASETS.values()]


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name`` (UnknownNameError listing the valid names if none)."""
    if name in BUNDLED:
        return BUNDLED[name].info
    if name in HUB_DATASETS:
        return _hub_info(HUB_DATASETS[name])
    raise _unknown(name)


def _unknown(name: str) -> UnknownNameError:
    return UnknownNameError(
        "dataset",
        name,
        list(BUNDLED) + list(HUB_DATASETS),
        hint=(
            f"Offline (bundled): {', '.join(BUNDLED)}. The others are Hugging Face Hub datasets "
            "and need network, or take your own files with the hub's columns through "
            "data_files=, e.g. load_dataset('sst2', data_files={'train': 'train.csv'})."
        ),
    )


def subset(ds: datasets.Dataset, max_samples: int | None, seed: int = 0) -> datasets.Dataset:
    """A seeded random subset of ``max_samples`` rows, kept in their original order.

    Original order keeps paragraphs of a text corpus in reading order; shuffle afterwards if
    training needs it. The same (dataset, max_samples, seed) always gives the same rows.
    """
    if max_samples is None:
        return ds
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
        raise LmpruneError(f"max_samples must be a positive integer or None, got {max_samples!r}")
    if max_samples >= len(ds):
        return ds
    keep = sorted(random.Random(seed).sample(range(len(ds)), max_samples))
    return ds.select(keep)


def load_dataset(
    name: str,
    split: str = "train",
    *,
    data_files: DataFiles | None = None,
    max_samples: int | None = None,
    seed: int = 0,
) -> datasets.Dataset:
    """Load ``split`` of dataset ``name`` with normalized columns.

    Args:
        name: a bundled name (``foods``, ``austen``, ``chat-pairs``, ``wordnet-defs``; offline)
            or a hub benchmark (``sst2``, ``mnli``, ``squad_v2``, ``wikitext2``, ``piqa``, ...).
        split: split name; for local files, the key of ``data_files`` (a single path or list of
            paths is taken as this split).
        data_files: local csv/json/jsonl/parquet/txt file(s) with the hub's raw columns, read
            instead of the hub (hub datasets only).
        max_samples: keep a seeded random subset of at most this many rows.
        seed: seed of that subset.
    """
    if name in BUNDLED:
        if data_files is not None:
            raise LmpruneError(
                f"{name!r} is a bundled dataset and takes no data_files=; to train on your own "
                f"files, pick the hub dataset with the same kind ({BUNDLED[name].info.kind}) "
                "and give its raw columns, e.g. load_dataset('sst2', data_files=...)"
            )
        ds = load_bundled(name, split)
    elif name in HUB_DATASETS:
        ds = load_hub_dataset(HUB_DATASETS[name], split, data_files)
    else:
        raise _unknown(name)
    return subset(ds, max_samples, seed)
