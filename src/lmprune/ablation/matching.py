"""Free text -> a registered name (component, replacement, metric), robustly or not at all.

A phrase and each alias are reduced to word stems: lower case, hyphens and punctuation split
words ("self-distillation" -> self, distillation), Greek letters spelled out, filler words
dropped (articles, prepositions, "-based", "mechanism", "strategy", "step", ...), and light
stemming (plurals, "-ing", "-ed", a final "e"). Two stems are the same word when equal, when
one is a prefix of the other of at least 5 letters (``distill`` ~ ``distillation``) or of 4
letters and half the longer (``norm`` ~ ``normal``), when they are spelling variants (difflib
ratio >= 0.85: normalisation ~ normalization), or when two adjacent words of one side are one
word of the other (``one shot`` ~ ``oneshot``). Word order does not matter.

Words are weighted by how specific they are among the candidates: a stem in the aliases of
``k`` different candidates weighs ``1/sqrt(k)`` ("pruning" weighs little, "kurtosis" fully).
For each alias: ``alias_cover`` = weighted fraction of the alias's words found in the phrase;
``phrase_cover`` = weighted fraction of the phrase's words the alias explains. A candidate's
score is its best alias's ``alias_cover * (0.7 + 0.3 * phrase_cover)``: every word of the
alias must be there, and among those that are, the one explaining more of the phrase wins
("dynamic rank adjustment in APT adapter" is rank growth, not the APT adapter).

A match is confident when the best candidate's alias is covered to at least
:data:`MIN_COVER` and its score beats the runner-up (a different candidate) by at least
:data:`MIN_MARGIN`; otherwise :class:`MatchError` lists the closest names.
"""
from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from lmprune.errors import LmpruneError

MIN_COVER = 0.75
MIN_MARGIN = 0.04

FILLER = frozenset("""
a an the of in on for to with by and or at from into its their this that these those
during using use used via per based mechanism mechanisms strategy strategies step steps
scheme method module component components technique approach procedure process part
ablate ablated ablation remove removed removing replace replaced replacing entire whole
full proposed our model's
""".split())
GREEK = {"α": "alpha", "β": "beta", "γ": "gamma", "λ": "lambda", "μ": "mu", "τ": "tau"}


class MatchError(LmpruneError):
    """A phrase that matches no registered name with confidence."""


def stem(word: str) -> str:
    for suffix, repl, min_len in (("ies", "y", 5), ("sses", "ss", 5), ("s", "", 4),
                                  ("ing", "", 6), ("ed", "", 5), ("e", "", 4)):
        if word.endswith(suffix) and len(word) >= min_len and not (suffix == "s"
                                                                   and word.endswith("ss")):
            word = word[: len(word) - len(suffix)] + repl
    return word


def words(text: str) -> list[str]:
    """The stems of ``text`` that carry meaning, in order."""
    for letter, name in GREEK.items():
        text = text.replace(letter, f" {name} ")
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text).lower()
    tokens = re.findall(r"[a-z0-9]+", text)
    return [stem(t) for t in tokens if t not in FILLER and len(t) > 1 or t.isdigit()]


@functools.lru_cache(maxsize=65536)
def same_word(a: str, b: str) -> bool:
    if a == b:
        return True
    short, long_ = sorted((a, b), key=len)
    if long_.startswith(short) and (len(short) >= 5 or 4 <= len(short) >= len(long_) / 2):
        return True
    if min(len(a), len(b)) >= 6 and difflib.SequenceMatcher(None, a, b).ratio() >= 0.85:
        return True
    return False


def _covered(target: list[str], source: list[str]) -> list[bool]:
    """Which words of ``target`` occur in ``source`` (adjacent pairs may form one word)."""
    joined = {x + y for x, y in zip(source, source[1:])}
    hit = [t in joined or any(same_word(t, s) for s in source) for t in target]
    for i, (x, y) in enumerate(zip(target, target[1:])):
        if x + y in source:
            hit[i] = hit[i + 1] = True
    return hit


@dataclass(frozen=True)
class Candidate:
    key: str  # what a match returns
    label: str  # how it is named in messages
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class Scored:
    candidate: Candidate
    score: float
    cover: float
    alias: str


class Matcher:
    """Scores phrases against a fixed set of candidates (see the module docstring)."""

    def __init__(self, candidates: Iterable[Candidate], kind: str):
        self.candidates = list(candidates)
        self.kind = kind
        self._aliases = [(c, alias, words(alias)) for c in self.candidates
                         for alias in (c.label, *c.aliases)]
        frequency: dict[str, set[str]] = {}
        for c, _, stems in self._aliases:
            for w in stems:
                frequency.setdefault(w, set()).add(c.key)
        self._weight = {w: 1 / math.sqrt(len(keys)) for w, keys in frequency.items()}
        self._weights: dict[str, float] = {}

    def weight(self, word: str) -> float:
        """1/sqrt(number of candidates using the word), the smallest over its spellings."""
        if word not in self._weights:
            known = [v for w, v in self._weight.items() if same_word(w, word)]
            self._weights[word] = min(known) if known else 1.0
        return self._weights[word]

    def rank(self, phrase: str) -> list[Scored]:
        """Every candidate with its best alias's score, best first."""
        said = words(phrase)
        said_weight = [self.weight(w) for w in said]
        best: dict[str, Scored] = {}
        for candidate, alias, stems in self._aliases:
            if not stems or not said:
                continue
            alias_weight = [self.weight(w) for w in stems]
            hit = _covered(stems, said)
            cover = sum(w for w, h in zip(alias_weight, hit) if h) / sum(alias_weight)
            explained = _covered(said, stems)
            phrase_cover = sum(w for w, h in zip(said_weight, explained) if h) / sum(said_weight)
            score = cover * (0.7 + 0.3 * phrase_cover)
            old = best.get(candidate.key)
            if old is None or (score, cover) > (old.score, old.cover):
                best[candidate.key] = Scored(candidate, score, cover, alias)
        return sorted(best.values(), key=lambda s: (-s.score, -s.cover, s.candidate.key))

    def match(self, phrase: str, where: str = "") -> Scored:
        """The confident best candidate for ``phrase``, or :class:`MatchError`."""
        ranked = self.rank(phrase)
        if not ranked or ranked[0].cover < MIN_COVER:
            raise MatchError(self._message(phrase, ranked, where, "matches no"))
        if len(ranked) > 1 and ranked[0].score - ranked[1].score < MIN_MARGIN \
                and ranked[1].cover >= MIN_COVER:
            raise MatchError(self._message(phrase, ranked, where, "is ambiguous between"))
        return ranked[0]

    def _message(self, phrase: str, ranked: list[Scored], where: str, problem: str) -> str:
        close = [s.candidate.label for s in ranked if s.score > 0][:3]
        if not close:  # nothing shares a word: fall back to spelling
            close = difflib.get_close_matches(phrase.lower(), [c.label for c in self.candidates],
                                              n=3)
        head = f"{where}: " if where else ""
        if problem == "is ambiguous between":
            return (f"{head}{self.kind} {phrase!r} is ambiguous between "
                    f"{' and '.join(repr(c) for c in close[:2])}; use more of the name")
        closest = f" Closest: {', '.join(repr(c) for c in close)}." if close else ""
        return (f"{head}{self.kind} {phrase!r} matches no registered {self.kind} with "
                f"confidence.{closest} Registered: "
                f"{', '.join(c.label for c in self.candidates)}")
