"""The offline suite vendored inside the package: real text, small, no network needed.

The files under ``bundled/<name>/<split>.jsonl.gz`` are already in the normalized schema
(built by ``scripts/build_bundle.py``; sources and licenses in ``bundled/PROVENANCE.md``), so
loading is "decompress, parse, wrap in a Dataset": a second or less, no ``datasets`` cache.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

import datasets

from lmprune.data.schema import DatasetInfo, features_for
from lmprune.errors import LmpruneError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


@dataclass(frozen=True)
class BundledSpec:
    """A bundled dataset: its public info plus any extra (non-schema) string columns."""

    info: DatasetInfo
    extra: tuple[str, ...] = ()


BUNDLED_SPECS: tuple[BundledSpec, ...] = (
    BundledSpec(DatasetInfo(
        name="foods",
        kind="classification",
        description="Amazon fine-food reviews, binary sentiment (great/other, ~65% great); an "
                    "offline stand-in for SST-2. train 3,500 / validation 500 (carved from the "
                    "original train) / test 1,000",
        offline=True,
        splits=("train", "validation", "test"),
        source="bundled: SNAP Amazon Fine Foods via Debian r-cran-modeldata 1.1.0 (MIT)",
        labels=("other", "great"),
    )),
    BundledSpec(DatasetInfo(
        name="austen",
        kind="text",
        description="Jane Austen novels, one paragraph per row with the title in `source`; for "
                    "calibration and perplexity. train = Emma, Mansfield Park, Pride and "
                    "Prejudice, Sense and Sensibility; test = Persuasion (held out)",
        offline=True,
        splits=("train", "test"),
        source="bundled: Debian r-cran-janeaustenr 1.0.0 (public-domain texts)",
    ), extra=("source",)),
    BundledSpec(DatasetInfo(
        name="chat-pairs",
        kind="instruction",
        description="898 distinct short conversational instruction/response pairs in Alpaca "
                    "format; split by instruction (~90/10), so test prompts are unseen",
        offline=True,
        splits=("train", "test"),
        source="bundled: PyPI chatterbot-corpus 1.3.3 (BSD-3-Clause)",
    )),
    BundledSpec(DatasetInfo(
        name="wordnet-defs",
        kind="multiple-choice",
        description="Pick the right definition of a common English noun among 4 (chance 25%); "
                    "zero-shot signal for small LMs. test 2,000 / validation 500",
        offline=True,
        splits=("test", "validation"),
        source="bundled: WordNet 3.0 via Debian wordnet-base 1:3.0-37 (WordNet license)",
    )),
)

BUNDLED: dict[str, BundledSpec] = {spec.info.name: spec for spec in BUNDLED_SPECS}


def bundled_file(name: str, split: str) -> Traversable:
    """The packaged file of one split (works from a source tree, a wheel or a zip)."""
    return resources.files("lmprune.data").joinpath("bundled", name, f"{split}.jsonl.gz")


def load_bundled(name: str, split: str) -> datasets.Dataset:
    """Load one split of a bundled dataset (validates the split name first)."""
    spec = BUNDLED[name]
    info = spec.info
    if split not in info.splits:
        raise LmpruneError(
            f"bundled dataset {name!r} has no split {split!r}. Valid splits: {', '.join(info.splits)}."
        )
    path = bundled_file(name, split)
    if not path.is_file():
        raise LmpruneError(
            f"bundled file {name}/{split}.jsonl.gz is missing from the installed package; "
            "reinstall lmprune or rebuild it with scripts/build_bundle.py"
        )
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines]
    features = features_for(info.kind, labels=info.labels, extra=spec.extra)
    return datasets.Dataset.from_list(rows, features=features, split=datasets.Split(split))
