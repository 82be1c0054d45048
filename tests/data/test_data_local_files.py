"""Every hub benchmark loads from local files in its raw hub format, normalized like the hub."""
from __future__ import annotations

import json
import math

import pytest
from raw_hub_rows import RAW, write_rows

from lmprune.data import list_datasets, load_dataset
from lmprune.data.hub_tables import HUB_DATASETS
from lmprune.errors import LmpruneError

SCHEMA = {
    "classification": {"text", "label"},
    "regression": {"text", "label"},
    "qa": {"id", "question", "context", "answers"},
    "summarization": {"document", "summary"},
    "text": {"text"},
    "instruction": {"instruction", "input", "output"},
    "multiple-choice": {"query", "choices", "label"},
}


def test_every_hub_dataset_has_a_fixture():
    hub_names = {d.name for d in list_datasets() if not d.offline}
    assert hub_names == set(RAW)


@pytest.mark.parametrize("name", sorted(RAW))
def test_local_file_normalizes_like_the_hub(tmp_path, name):
    ext, rows, expected = RAW[name]
    path = write_rows(tmp_path / f"train.{ext}", rows)
    spec = HUB_DATASETS[name]

    ds = load_dataset(name, data_files={"train": str(path)})

    want = SCHEMA[spec.kind] | ({"text_pair"} if spec.has_pair else set())
    assert set(ds.column_names) == want
    assert len(ds) == len(rows)
    first = ds[0]
    for key, value in expected.items():
        if isinstance(value, float):
            assert math.isclose(first[key], value, rel_tol=1e-6)
        else:
            assert first[key] == value, key


def test_single_path_is_the_requested_split(tmp_path):
    _, rows, _ = RAW["sst2"]
    path = write_rows(tmp_path / "dev.csv", rows)
    ds = load_dataset("sst2", "validation", data_files=path)
    assert ds["text"][1] == rows[1]["sentence"]
    assert ds.features["label"].names == ["negative", "positive"]


def test_label_names_in_a_local_file_map_to_ids(tmp_path):
    rows = [{"sentence": "great", "label": "positive"}, {"sentence": "bad", "label": "negative"}]
    ds = load_dataset("sst2", data_files=write_rows(tmp_path / "x.csv", rows))
    assert ds["label"] == [1, 0]
    bad = write_rows(tmp_path / "bad.csv", [{"sentence": "ok", "label": "maybe"}])
    with pytest.raises(LmpruneError, match="'maybe' is neither a number nor one of the label names"):
        load_dataset("sst2", data_files=str(bad))


def test_unlabeled_test_rows_get_label_minus_one(tmp_path):
    _, rows, _ = RAW["hellaswag"]
    ds = load_dataset("hellaswag", "test", data_files=write_rows(tmp_path / "t.jsonl", rows))
    assert ds["label"] == [3, -1]
    assert ds[1]["query"] == "Home and Garden: How to clean a sink. rinse"
    _, rows, _ = RAW["winogrande"]
    ds = load_dataset("winogrande", data_files=write_rows(tmp_path / "w.jsonl", rows))
    assert ds[1]["label"] == -1
    assert ds[1]["choices"] == ["trophy is too big.", "suitcase is too big."]


def test_squad_unanswerable_has_empty_answer_lists(tmp_path):
    _, rows, _ = RAW["squad_v2"]
    ds = load_dataset("squad_v2", data_files=write_rows(tmp_path / "s.jsonl", rows))
    assert ds[1]["answers"] == {"text": [], "answer_start": []}
    ans = ds[0]["answers"]
    assert ds[0]["context"][ans["answer_start"][0]:].startswith(ans["text"][0])


def test_original_nested_squad_json(tmp_path):
    nested = {"version": "v2.0", "data": [{"title": "Normans", "paragraphs": [{
        "context": "Normandy is a region in France.",
        "qas": [
            {"id": "a", "question": "Where is Normandy?", "is_impossible": False,
             "answers": [{"text": "France", "answer_start": 24}]},
            {"id": "b", "question": "Who named it?", "is_impossible": True, "answers": [],
             "plausible_answers": [{"text": "Normans", "answer_start": 0}]},
        ]}]}]}
    path = tmp_path / "dev-v2.0.json"
    path.write_text(json.dumps(nested))
    ds = load_dataset("squad_v2", "validation", data_files={"validation": str(path)})
    assert ds["id"] == ["a", "b"]
    assert ds["answers"] == [{"text": ["France"], "answer_start": [24]}, {"text": [], "answer_start": []}]


def test_arc_numeric_answer_keys(tmp_path):
    _, rows, _ = RAW["arc_easy"]
    ds = load_dataset("arc_easy", data_files=write_rows(tmp_path / "a.jsonl", rows))
    assert ds[1]["label"] == 0 and ds[1]["choices"][0] == "gram"


def test_parquet_and_gzip_files(tmp_path):
    import datasets

    _, rows, _ = RAW["mnli"]
    parquet = tmp_path / "mnli.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(parquet))
    ds = load_dataset("mnli", "validation_matched", data_files={"validation_matched": str(parquet)})
    assert ds["label"] == [1, 0, 0]

    import gzip

    gz = tmp_path / "mnli.jsonl.gz"
    gz.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    assert load_dataset("mnli", data_files=str(gz))["text_pair"][1] == "You lose the things."


def test_text_file_keeps_lines_for_ptb(tmp_path):
    path = tmp_path / "ptb.train.txt"
    path.write_text(" the cat sat\n on the mat\n")
    ds = load_dataset("ptb", data_files=str(path))
    assert ds["text"] == [" the cat sat", " on the mat"]


def test_missing_columns_say_which_and_what_is_expected(tmp_path):
    path = write_rows(tmp_path / "x.csv", [{"review": "nice", "label": 1}])
    with pytest.raises(LmpruneError, match=r"lack column\(s\) sentence.*found review, label"):
        load_dataset("sst2", data_files=str(path))


def test_split_missing_from_mapping(tmp_path):
    path = write_rows(tmp_path / "x.csv", RAW["sst2"][1])
    with pytest.raises(LmpruneError, match=r"no split 'test'.*it has: train"):
        load_dataset("sst2", "test", data_files={"train": str(path)})


def test_bad_files(tmp_path):
    with pytest.raises(LmpruneError, match="not found"):
        load_dataset("sst2", data_files=str(tmp_path / "nope.csv"))
    odd = tmp_path / "x.xlsx"
    odd.write_text("x")
    with pytest.raises(LmpruneError, match="supported: .*csv"):
        load_dataset("sst2", data_files=str(odd))
    txt = tmp_path / "x.txt"
    txt.write_text("hello\n")
    with pytest.raises(LmpruneError, match="plain text.*use csv"):
        load_dataset("sst2", data_files=str(txt))


def test_max_samples_on_local_files(tmp_path):
    _, rows, _ = RAW["sst2"]
    path = str(write_rows(tmp_path / "x.csv", rows))
    a = load_dataset("sst2", data_files=path, max_samples=2, seed=3)
    b = load_dataset("sst2", data_files=path, max_samples=2, seed=3)
    assert len(a) == 2 and a["text"] == b["text"]
