"""Errors name the problem and the fix; a dead hub fails fast instead of retrying."""
from __future__ import annotations

import datasets
import pytest

from lmprune.data import hub, load_dataset
from lmprune.data.hub import resolve_split
from lmprune.data.hub_tables import HUB_DATASETS
from lmprune.errors import LmpruneError, UnknownNameError


def test_unknown_name_lists_names_and_the_fix():
    with pytest.raises(UnknownNameError) as err:
        load_dataset("sst-2")
    msg = str(err.value)
    assert "Did you mean 'sst2'" in msg
    assert "foods" in msg and "wikitext2" in msg
    assert "need network" in msg and "data_files=" in msg


def test_unknown_split_lists_splits():
    with pytest.raises(LmpruneError, match=r"no split 'dev'.*Valid splits: train, validation, test"):
        load_dataset("foods", "dev")
    # checked before any network access
    with pytest.raises(LmpruneError, match=r"no split 'dev'.*train, validation_matched.*'validation' means"):
        load_dataset("mnli", "dev")


def test_split_aliases():
    assert resolve_split(HUB_DATASETS["mnli"], "validation") == "validation_matched"
    assert resolve_split(HUB_DATASETS["sst2"], "validation") == "validation"


def test_unreachable_hub_fails_fast_with_the_fix(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)

    def never(*a, **k):
        raise AssertionError("datasets.load_dataset must not be called when the hub is down")

    monkeypatch.setattr(datasets, "load_dataset", never)
    with pytest.raises(LmpruneError) as err:
        load_dataset("piqa", "validation")
    msg = str(err.value)
    assert "not reachable" in msg and "data_files=" in msg
    assert "goal, sol1, sol2, label" in msg and "HF_HUB_OFFLINE=1" in msg


def test_hub_errors_are_wrapped(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # offline mode: no probe

    def fail(*a, **k):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises(LmpruneError, match=r"ConnectionError.*no cached copy.*data_files="):
        load_dataset("sst2", "validation")


def test_hub_call_passes_path_config_revision(monkeypatch):
    calls = []

    def fake(path, config, split, revision):
        calls.append((path, config, split, revision))
        return datasets.Dataset.from_list([{"sentence": "pierre vinken"}])

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets, "load_dataset", fake)
    ds = load_dataset("ptb", "test")
    assert calls == [("ptb-text-only/ptb_text_only", "penn_treebank", "test", "refs/convert/parquet")]
    assert ds["text"] == ["pierre vinken"]


def test_bad_max_samples_and_bundled_data_files():
    with pytest.raises(LmpruneError, match="max_samples"):
        load_dataset("foods", max_samples=0)
    with pytest.raises(LmpruneError, match="bundled dataset and takes no data_files"):
        load_dataset("foods", data_files="x.csv")
