"""The vendored offline suite: schema, sizes, balance, disjoint splits, provenance in sync."""
from __future__ import annotations

import collections
import gzip
import hashlib
import re
import socket
from importlib import resources

import pytest

from lmprune.data import DatasetInfo, dataset_info, list_datasets, load_dataset

SIZES = {
    ("foods", "train"): 3500,
    ("foods", "validation"): 500,
    ("foods", "test"): 1000,
    ("chat-pairs", "train"): 808,
    ("chat-pairs", "test"): 90,
    ("wordnet-defs", "test"): 2000,
    ("wordnet-defs", "validation"): 500,
    ("austen", "train"): 8207,
    ("austen", "test"): 1035,
}
COLUMNS = {
    "foods": ["text", "label"],
    "austen": ["text", "source"],
    "chat-pairs": ["instruction", "input", "output"],
    "wordnet-defs": ["query", "choices", "label"],
}
BUNDLE = resources.files("lmprune.data").joinpath("bundled")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Bundled data must load with every socket refused."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_list_datasets_marks_the_bundled_suite_offline():
    infos = {d.name: d for d in list_datasets()}
    assert {n for n, d in infos.items() if d.offline} == set(COLUMNS)
    assert all(isinstance(d, DatasetInfo) for d in infos.values())
    assert infos["foods"].labels == ("other", "great")
    assert infos["sst2"].labels == ("negative", "positive") and not infos["sst2"].offline
    assert dataset_info("austen").kind == "text"


@pytest.mark.parametrize(("name", "split"), sorted(SIZES))
def test_schema_and_size(name, split):
    ds = load_dataset(name, split)
    assert ds.column_names == COLUMNS[name]
    assert len(ds) == SIZES[name, split]
    assert set(dataset_info(name).splits) == {s for n, s in SIZES if n == name}


def test_foods_balance_cleaning_and_disjoint_splits():
    splits = {s: load_dataset("foods", s) for s in ("train", "validation", "test")}
    for ds in splits.values():
        assert 0.60 < sum(ds["label"]) / len(ds) < 0.70  # ~65% great
        assert ds.features["label"].names == ["other", "great"]
        assert not any("<br" in t or "  " in t for t in ds["text"])
    seen = set(splits["train"]["text"]) | set(splits["test"]["text"])
    assert not seen & set(splits["validation"]["text"])


def test_austen_test_novel_is_held_out():
    train, test = load_dataset("austen", "train"), load_dataset("austen", "test")
    assert set(test["source"]) == {"Persuasion"}
    assert set(train["source"]) == {"Emma", "Mansfield Park", "Pride and Prejudice", "Sense and Sensibility"}
    for ds in (train, test):
        assert all(t and t == " ".join(t.split()) for t in ds["text"])  # non-empty, normalized
    assert test[5]["text"].startswith("Sir Walter Elliot, of Kellynch Hall")
    assert sum(len(t) for t in test["text"]) > 400_000  # the whole novel, not a sample


def test_chat_pairs_alpaca_format_and_unseen_test_prompts():
    train, test = load_dataset("chat-pairs", "train"), load_dataset("chat-pairs", "test")
    assert set(train["input"]) == set(test["input"]) == {""}
    assert not set(train["instruction"]) & set(test["instruction"])
    pairs = [(r["instruction"], r["output"]) for ds in (train, test) for r in ds]
    assert len(set(pairs)) == len(pairs)


def test_wordnet_defs_items_are_well_formed():
    query = re.compile(r'What is the meaning of the word "([a-z]{3,12})"\?\nAnswer:')
    lemmas = {}
    for split in ("test", "validation"):
        ds = load_dataset("wordnet-defs", split)
        lemmas[split] = set()
        for item in ds:
            m = query.fullmatch(item["query"])
            assert m, item["query"]
            lemmas[split].add(m.group(1))
            assert len(item["choices"]) == 4 and len(set(item["choices"])) == 4
            assert 0 <= item["label"] < 4
        assert len(lemmas[split]) == len(ds)  # one item per lemma
        counts = collections.Counter(ds["label"])
        assert min(counts.values()) > 0.8 * len(ds) / 4  # right answer spread over positions
    assert not lemmas["test"] & lemmas["validation"]


def test_a_known_wordnet_item_has_its_definition_right():
    ds = load_dataset("wordnet-defs", "validation")
    item = next(r for r in ds if '"longshoreman"' in r["query"])
    assert item["choices"][item["label"]] == "a laborer who loads and unloads vessels in a port"


def _is_subsequence(part: list, whole: list) -> bool:
    it = iter(whole)
    return all(any(x == y for y in it) for x in part)


@pytest.mark.parametrize("name", sorted(COLUMNS))
def test_seeded_subsets_are_deterministic_and_ordered(name):
    split = dataset_info(name).splits[0]
    key = COLUMNS[name][0]
    full = list(load_dataset(name, split)[key])
    a, b, c = (list(load_dataset(name, split, max_samples=50, seed=s)[key]) for s in (1, 1, 2))
    assert len(a) == 50 and a == b and a != c
    assert _is_subsequence(a, full)  # original order kept
    assert len(load_dataset(name, split, max_samples=10**9)) == len(full)


def test_provenance_lists_every_file_with_its_checksum():
    text = BUNDLE.joinpath("PROVENANCE.md").read_text(encoding="utf-8")
    for name, split in SIZES:
        data = BUNDLE.joinpath(name, f"{split}.jsonl.gz").read_bytes()
        row = f"| `{name}/{split}.jsonl.gz` | {SIZES[name, split]:,} | {len(data):,} | "
        assert row + f"`{hashlib.sha256(data).hexdigest()[:16]}…` |" in text
        assert gzip.decompress(data).count(b"\n") == SIZES[name, split]
    for license_ in ("MIT", "public domain", "BSD-3-Clause", "WordNet 3.0 license"):
        assert license_ in text
