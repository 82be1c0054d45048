#!/usr/bin/env python3
"""Build the bundled ``wordnet-defs`` task: "pick the right definition of WORD" (4-way).

Source: Debian package ``wordnet-base`` (WordNet 3.0, Princeton WordNet license, permissive).
The script fetches it with ``apt-get download wordnet-base`` and unpacks it with ``dpkg-deb -x``
into a temporary folder (no root, no install), or reads an already unpacked tree (``--root``).

Construction (deterministic for a given seed and WordNet version):

* lemmas: noun entries of ``index.noun`` that are one lowercase word of 3-12 letters (no ``_``,
  digits or hyphens) and that occur at least once in the SemCor sense-tagged corpus
  (``tagsense_cnt >= 1``), our proxy for "reasonably common";
* the right answer is the definition of the lemma's *first* sense (WordNet orders senses by
  frequency): the gloss in ``data.noun`` up to its first ``;`` (the rest is more definitions or
  quoted examples);
* items whose definition contains the lemma itself are skipped (the answer would be a give-away);
* three distractors are first-sense definitions of other candidate lemmas, drawn at random,
  excluding synsets that contain the lemma and definitions that mention it, so exactly one choice
  is right; the right answer's position is uniform over the four slots;
* ``test`` gets the first 2,000 items, ``validation`` the next 500 (disjoint lemmas).

Run ``python scripts/build_wordnet_defs.py --out DIR`` to write ``DIR/{test,validation}.jsonl.gz``
(``scripts/build_bundle.py`` calls :func:`build` for the whole bundle).
"""
from __future__ import annotations

import argparse
import glob
import gzip
import json
import random
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

QUERY_TEMPLATE = 'What is the meaning of the word "{lemma}"?\nAnswer:'
LEMMA_RE = re.compile(r"[a-z]{3,12}")
SPLIT_SIZES = {"test": 2000, "validation": 500}
N_CHOICES = 4


@dataclass(frozen=True)
class Synset:
    """One noun synset: its member words (lowercased) and its first definition."""

    offset: str
    words: frozenset[str]
    definition: str


def fetch_wordnet(workdir: Path) -> tuple[Path, str]:
    """Download and unpack ``wordnet-base``; return (unpacked root, Debian package version)."""
    subprocess.run(["apt-get", "download", "wordnet-base"], cwd=workdir, check=True)
    deb = sorted(glob.glob(str(workdir / "wordnet-base_*.deb")))[-1]
    root = workdir / "root"
    subprocess.run(["dpkg-deb", "-x", deb, str(root)], check=True)
    version = subprocess.run(
        ["dpkg-deb", "-f", deb, "Version"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return root, version


def definition_of(gloss: str) -> str:
    """The definition part of a WordNet gloss: the text before the first ``;``."""
    return " ".join(gloss.split(";", 1)[0].split()).strip()


def read_synsets(data_noun: Path) -> dict[str, Synset]:
    """Parse ``data.noun`` (header lines start with two spaces) into offset -> Synset."""
    synsets: dict[str, Synset] = {}
    for line in data_noun.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("  ") or "|" not in line:
            continue
        head, gloss = line.split("|", 1)
        fields = head.split()
        n_words = int(fields[3], 16)
        words = frozenset(fields[4 + 2 * i].lower() for i in range(n_words))
        synsets[fields[0]] = Synset(fields[0], words, definition_of(gloss))
    return synsets


def read_first_senses(index_noun: Path) -> dict[str, str]:
    """Lemmas that pass the commonness filter -> offset of their first (most frequent) sense."""
    first: dict[str, str] = {}
    for line in index_noun.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(" "):
            continue
        fields = line.split()
        lemma, n_ptr = fields[0], int(fields[3])
        tagsense_cnt = int(fields[5 + n_ptr])
        if LEMMA_RE.fullmatch(lemma) and tagsense_cnt >= 1:
            first[lemma] = fields[6 + n_ptr]
    return first


def mentions(text: str, lemma: str) -> bool:
    """Whether ``lemma`` occurs in ``text`` as a word (case-insensitive)."""
    return re.search(rf"\b{re.escape(lemma)}\b", text, flags=re.IGNORECASE) is not None


def make_items(root: Path, seed: int = 0) -> list[dict]:
    """All items, in their final (seeded) order; the splits are consecutive slices."""
    wordnet = root / "usr/share/wordnet"
    synsets = read_synsets(wordnet / "data.noun")
    first = read_first_senses(wordnet / "index.noun")
    candidates = [
        (lemma, synsets[offset])
        for lemma, offset in sorted(first.items())
        if len(synsets[offset].definition.split()) >= 2
        and not mentions(synsets[offset].definition, lemma)
    ]
    pool = sorted({s.offset: s for _, s in candidates}.values(), key=lambda s: s.offset)
    rng = random.Random(seed)
    rng.shuffle(candidates)
    items, used_definitions = [], set()
    for lemma, right in candidates:
        if right.definition in used_definitions:
            continue  # two lemmas of one synset would make two near-identical items
        wrong: list[str] = []
        while len(wrong) < N_CHOICES - 1:
            other = rng.choice(pool)
            d = other.definition
            if lemma in other.words or mentions(d, lemma) or d == right.definition or d in wrong:
                continue
            wrong.append(d)
        label = rng.randrange(N_CHOICES)
        choices = wrong[:label] + [right.definition] + wrong[label:]
        items.append({"query": QUERY_TEMPLATE.format(lemma=lemma), "choices": choices, "label": label})
        used_definitions.add(right.definition)
        if len(items) == sum(SPLIT_SIZES.values()):
            break
    return items


def write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    """Write rows as gzip'd JSON lines with a fixed mtime, so rebuilds are byte-identical."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(payload)


def build(out_dir: Path, root: Path | None = None, seed: int = 0) -> dict:
    """Write ``out_dir/{test,validation}.jsonl.gz``; return provenance facts for PROVENANCE.md."""
    with tempfile.TemporaryDirectory() as tmp:
        version = "unknown (unpacked tree given with --root)"
        if root is None:
            root, version = fetch_wordnet(Path(tmp))
        items = make_items(root, seed)
    start = 0
    for split, size in SPLIT_SIZES.items():
        write_jsonl_gz(out_dir / f"{split}.jsonl.gz", items[start : start + size])
        start += size
    return {"package": "wordnet-base", "version": version, "seed": seed, "sizes": dict(SPLIT_SIZES)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder for the splits")
    parser.add_argument("--root", type=Path, help="already unpacked wordnet-base (skips apt-get)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(build(args.out, args.root, args.seed), indent=2))


if __name__ == "__main__":
    main()
