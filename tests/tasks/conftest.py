"""Small local files in the hub's raw formats (offline stand-ins for SQuAD v2 and CNN/DM)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # task_rows, under any import mode

from task_rows import AMAZON, QUESTIONS, TEA, qa_record  # noqa: E402


@pytest.fixture(scope="session")
def squad_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The original nested SQuAD 2.0 JSON layout of :data:`task_rows.QUESTIONS`."""
    paragraphs = []
    for context in (AMAZON, TEA):
        qas = [qa_record(f"q{i}", q, c, a) for i, (q, c, a) in enumerate(QUESTIONS) if c == context]
        paragraphs.append({"context": context, "qas": qas})
    path = tmp_path_factory.mktemp("squad") / "dev-v2.0.json"
    path.write_text(json.dumps({"version": "v2.0", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


@pytest.fixture(scope="session")
def cnn_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CNN/DailyMail rows with the hub's raw columns ``article``/``highlights``."""
    rows = [
        {"article": "The cat sat on the mat all day long. It was a happy cat.",
         "highlights": "Cat sat on mat."},
        {"article": "Stocks fell sharply on Monday after a weak jobs report.",
         "highlights": "Stocks fell on Monday."},
        {"article": "A new bridge opened in the city, cutting travel times.",
         "highlights": "New bridge opens."},
    ]
    path = tmp_path_factory.mktemp("cnn") / "validation.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path
