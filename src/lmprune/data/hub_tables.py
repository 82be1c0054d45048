"""Hub benchmarks as data: one table entry per dataset name, never one class per dataset.

Each entry says where the dataset lives on the Hugging Face Hub (path, config, revision), which
splits it has, which raw columns feed which normalized ones (``columns``: role -> raw column)
and, only where a rename is not enough, a small row function from :mod:`.normalizers`.
The same ``columns`` apply to local files (``data_files=``), which therefore use the hub's raw
column names. Adding a benchmark is adding an entry.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lmprune.data import normalizers as norm

PARQUET_EXPORT = "refs/convert/parquet"  # the Hub's parquet copy of script-only datasets


@dataclass(frozen=True)
class HubSpec:
    """How to fetch one hub dataset and map it to the normalized schema.

    ``split_aliases`` lets generic recipes ask for ``validation``/``test`` on datasets whose
    splits are named otherwise (MNLI). ``prepare_local`` reshapes a local file's table before
    the column check (e.g. the original nested SQuAD JSON).
    """

    name: str
    kind: str
    description: str
    path: str
    config: str | None
    splits: tuple[str, ...]
    columns: Mapping[str, str]
    normalize: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    labels: tuple[str, ...] = ()
    revision: str | None = None
    split_aliases: Mapping[str, str] = field(default_factory=dict)
    prepare_local: Callable[[Any], Any] | None = None

    @property
    def source(self) -> str:
        return f"hub:{self.path}" + (f":{self.config}" if self.config else "")

    @property
    def has_pair(self) -> bool:
        return "text_pair" in self.columns


def _same(*names: str) -> dict[str, str]:
    """Columns read under their own names (custom normalizers)."""
    return {n: n for n in names}


TRAIN_VAL_TEST = ("train", "validation", "test")
TRAIN_VAL = ("train", "validation")


def _glue(name: str, text: str, pair: str | None, labels: tuple[str, ...], description: str, **kw) -> HubSpec:
    """A GLUE task from nyu-mll/glue (test splits are unlabeled: label -1)."""
    columns = {"text": text, **({"text_pair": pair} if pair else {}), "label": "label"}
    kind = "regression" if not labels else "classification"
    return HubSpec(name, kind, description, "nyu-mll/glue", name, kw.pop("splits", TRAIN_VAL_TEST),
                   columns, labels=labels, **kw)


def _squad_local(ds: Any) -> Any:
    """Lazy import: flatten the original nested SQuAD JSON (``{"data": [...]}``) if given."""
    from lmprune.data.local_files import flatten_squad_json

    return flatten_squad_json(ds)


HUB_SPECS: tuple[HubSpec, ...] = (
    # --- GLUE (classification; STS-B is regression) -------------------------------------
    _glue("sst2", "sentence", None, ("negative", "positive"), "GLUE SST-2: movie-review sentiment"),
    _glue("mnli", "premise", "hypothesis", ("entailment", "neutral", "contradiction"),
          "GLUE MNLI: natural language inference (validation = matched)",
          splits=("train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched"),
          split_aliases={"validation": "validation_matched", "test": "test_matched"}),
    _glue("qnli", "question", "sentence", ("entailment", "not_entailment"),
          "GLUE QNLI: does the sentence answer the question"),
    _glue("qqp", "question1", "question2", ("not_duplicate", "duplicate"),
          "GLUE QQP: are two Quora questions duplicates"),
    _glue("rte", "sentence1", "sentence2", ("entailment", "not_entailment"),
          "GLUE RTE: recognizing textual entailment"),
    _glue("mrpc", "sentence1", "sentence2", ("not_equivalent", "equivalent"),
          "GLUE MRPC: are two sentences paraphrases"),
    _glue("cola", "sentence", None, ("unacceptable", "acceptable"),
          "GLUE CoLA: grammatical acceptability"),
    _glue("stsb", "sentence1", "sentence2", (), "GLUE STS-B: semantic similarity score 0-5 (regression)"),
    _glue("wnli", "sentence1", "sentence2", ("not_entailment", "entailment"),
          "GLUE WNLI: Winograd-schema inference"),
    # --- question answering, summarization ----------------------------------------------
    HubSpec("squad_v2", "qa", "SQuAD 2.0: extractive QA with unanswerable questions",
            "rajpurkar/squad_v2", "squad_v2", TRAIN_VAL,
            _same("id", "question", "context", "answers"), prepare_local=_squad_local),
    HubSpec("cnn_dailymail", "summarization", "CNN/DailyMail 3.0.0: news article -> highlights",
            "abisee/cnn_dailymail", "3.0.0", TRAIN_VAL_TEST,
            {"document": "article", "summary": "highlights"}),
    # --- language modelling / calibration text ------------------------------------------
    HubSpec("wikitext2", "text", "WikiText-2 (raw): Wikipedia articles, one row per line as on the hub",
            "Salesforce/wikitext", "wikitext-2-raw-v1", TRAIN_VAL_TEST, {"text": "text"}),
    HubSpec("ptb", "text", "Penn Treebank (text only): one sentence per row",
            "ptb-text-only/ptb_text_only", "penn_treebank", TRAIN_VAL_TEST, {"text": "sentence"},
            revision=PARQUET_EXPORT),
    HubSpec("bookcorpus", "text", "BookCorpus: one sentence per row (train only, ~74M rows)",
            "bookcorpus/bookcorpus", "plain_text", ("train",), {"text": "text"},
            revision=PARQUET_EXPORT),
    # --- instruction tuning -------------------------------------------------------------
    HubSpec("alpaca", "instruction", "Stanford Alpaca: 52k instruction-following demonstrations",
            "tatsu-lab/alpaca", None, ("train",), _same("instruction", "input", "output")),
    # --- zero-shot multiple choice (prompts as in lm-eval 0.4) --------------------------
    HubSpec("boolq", "multiple-choice", "BoolQ: yes/no questions about a passage",
            "google/boolq", None, TRAIN_VAL, _same("question", "answer", "passage"), norm.boolq),
    HubSpec("piqa", "multiple-choice", "PIQA: physical commonsense, 2 solutions",
            "baber/piqa", None, TRAIN_VAL, _same("goal", "sol1", "sol2", "label"), norm.piqa),
    HubSpec("hellaswag", "multiple-choice", "HellaSwag: commonsense sentence completion, 4 endings",
            "Rowan/hellaswag", None, TRAIN_VAL_TEST,
            _same("activity_label", "ctx_a", "ctx_b", "endings", "label"), norm.hellaswag),
    HubSpec("winogrande", "multiple-choice", "WinoGrande (xl): pronoun resolution, 2 options",
            "allenai/winogrande", "winogrande_xl", TRAIN_VAL_TEST,
            _same("sentence", "option1", "option2", "answer"), norm.winogrande),
    HubSpec("arc_easy", "multiple-choice", "AI2 ARC Easy: grade-school science questions",
            "allenai/ai2_arc", "ARC-Easy", TRAIN_VAL_TEST,
            _same("question", "choices", "answerKey"), norm.arc),
    HubSpec("arc_challenge", "multiple-choice", "AI2 ARC Challenge: harder science questions",
            "allenai/ai2_arc", "ARC-Challenge", TRAIN_VAL_TEST,
            _same("question", "choices", "answerKey"), norm.arc),
    HubSpec("openbookqa", "multiple-choice", "OpenBookQA (main): elementary science, 4 choices",
            "allenai/openbookqa", "main", TRAIN_VAL_TEST,
            _same("question_stem", "choices", "answerKey"), norm.openbookqa),
)

HUB_DATASETS: dict[str, HubSpec] = {spec.name: spec for spec in HUB_SPECS}
