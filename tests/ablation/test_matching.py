"""Free text -> registered components, replacements and metrics (robust, or a clear error)."""
from __future__ import annotations

import pytest

from lmprune.ablation.components import METHOD_TABLES
from lmprune.ablation.expand import _component_matcher, infer_method
from lmprune.ablation.matching import Candidate, Matcher, MatchError, same_word, words
from lmprune.ablation.metrics import MATCHER as METRICS
from lmprune.ablation.plan import PlanSection

ALL = _component_matcher(METHOD_TABLES.values())

# (phrase as plans write it, "method/component")
PARTS = [
    ("APT adapter", "apt/apt adapter"),
    ("The APT adapters", "apt/apt adapter"),
    ("apt-adapter module", "apt/apt adapter"),
    ("Outlier-aware salience scoring (mechanism)", "apt/outlier-aware salience"),
    ("outlier aware salience", "apt/outlier-aware salience"),
    ("Salience scoring mechanism", "apt/outlier-aware salience"),
    ("Kurtosis-based outlier term", "apt/outlier-aware salience"),
    ("Self-knowledge distillation", "apt/self-distillation"),
    ("self distillation loss", "apt/self-distillation"),
    ("Knowledge Distillation (self)", "apt/self-distillation"),
    ("Parameter sharing in self-distillation", "apt/parameter sharing in self-distillation"),
    ("Shared teacher/student parameters in distillation",
     "apt/parameter sharing in self-distillation"),
    ("Dynamic rank adjustment in APT adapter", "apt/adaptive tuning"),
    ("Dynamic parameter addition in salient layers", "apt/adaptive tuning"),
    ("Adaptive tuning (rank growth)", "apt/adaptive tuning"),
    ("adaptive-rank growth strategy", "apt/adaptive tuning"),
    ("Early-stage pruning (strategy)", "apt/early-stage pruning"),
    ("early stage adaptive pruning schedule", "apt/early-stage pruning"),
    ("Pruning Schedule", "apt/early-stage pruning"),
    ("EMA of salience scores", "apt/salience ema"),
    ("Exponential moving average of salience", "apt/salience ema"),
    ("Hidden-dimension pruning", "apt/hidden-dimension pruning"),
    ("pruning of hidden dimensions", "apt/hidden-dimension pruning"),
    ("Adaptive pruning and tuning", "apt/APT as a whole"),
    ("Mask rearrangement", "lora-prune/mask rearrangement"),
    ("layer-wise mask tuning step", "lora-prune/mask tuning"),
    ("Normalization step in RI metric", "sublayer-ri/normalization in RI"),
    ("RI normalisation", "sublayer-ri/normalization in RI"),
    ("normalization of relative impact by parameter count", "sublayer-ri/normalization in RI"),
    ("Progressive search strategy", "sublayer-ri/progressive search"),
    ("progressive (iterative) search", "sublayer-ri/progressive search"),
    ("the calibration-sample search", "adapruner/calibration sample search"),
    ("Calibration samples selection", "adapruner/calibration sample search"),
    ("the coarse/fine α mix", "adapruner/coarse/fine alpha mix"),
    ("Coarse- and fine-grained importance mixing", "adapruner/coarse/fine alpha mix"),
    ("α mixing coefficients", "adapruner/coarse/fine alpha mix"),
    ("the alignment factors", "adapruner/alignment factors"),
    ("estimation-metric alignment", "adapruner/alignment factors"),
    ("TPE", "adapruner/TPE search"),
    ("Bayesian optimization (TPE)", "adapruner/TPE search"),
    ("Tree-structured Parzen estimator search", "adapruner/TPE search"),
    ("Taylor importance metric", "taylor/importance metric"),
    ("importance aggregation", "taylor/importance aggregation"),
]

# (method/component, replacement as written, option name)
REPLACEMENTS = [
    ("apt/outlier-aware salience", "random scoring", "random"),
    ("apt/outlier-aware salience", "Random salience", "random"),
    ("apt/outlier-aware salience", "magnitude-based scoring", "magnitude"),
    ("apt/outlier-aware salience", "weight magnitudes", "magnitude"),
    ("apt/outlier-aware salience", "gradient-based scoring", "gradient"),
    ("apt/outlier-aware salience", "Fisher information", "gradient"),
    ("apt/adaptive tuning", "static parameter allocation", "static"),
    ("apt/adaptive tuning", "Uniform parameter addition", "uniform"),
    ("apt/adaptive tuning", "fixed rank", "static"),
    ("apt/early-stage pruning", "late pruning", "late"),
    ("apt/early-stage pruning", "gradual pruning throughout training", "gradual"),
    ("apt/early-stage pruning", "one-shot pruning at initialization", "one-shot"),
    ("apt/early-stage pruning", "oneshot pruning at initialisation", "one-shot"),
    ("apt/early-stage pruning", "pruning after fine-tuning", "after"),
    ("apt/APT as a whole", "LoRA + prune", "lora + prune"),
    ("sublayer-ri/progressive search", "one-shot pruning", "one-shot"),
    ("sublayer-ri/progressive search", "One shot", "one-shot"),
    ("adapruner/TPE search", "random search", "random search"),
    ("adapruner/TPE search", "Random sampling", "random search"),
    ("taylor/importance metric", "vector-wise importance", "vector"),
    ("taylor/importance metric", "element-wise second order", "element2"),
]

METRIC_PHRASES = [
    ("task performance", "task performance"), ("Accuracy", "task performance"),
    ("F1 score", "task performance"), ("training time", "training time"),
    ("Training Efficiency", "training efficiency"), ("inference time", "inference time"),
    ("memory usage", "memory usage"), ("convergence speed", "convergence speed"),
    ("memory footprint", "memory usage"), ("training memory usage", "training memory usage"),
    ("inference speed", "inference speed"), ("perplexity", "perplexity"),
    ("speedup", "inference speed"), ("Speed-up", "inference speed"),
    ("throughput", "inference speed"), ("latency", "inference time"),
    ("peak GPU memory", "memory usage"), ("time to convergence", "convergence speed"),
    ("PPL", "perplexity"), ("number of parameters", "model size"),
]


@pytest.mark.parametrize("phrase, expected", PARTS)
def test_part_phrasings_match_their_component(phrase, expected):
    assert ALL.match(phrase).candidate.key == expected


def _options(key: str) -> Matcher:
    method, name = key.split("/", 1)
    component = METHOD_TABLES[method].component(name)
    return Matcher([Candidate(o.name, o.name, o.aliases) for o in component.replacements],
                   "replacement")


@pytest.mark.parametrize("component, phrase, expected", REPLACEMENTS)
def test_replacement_phrasings_match_their_option(component, phrase, expected):
    assert _options(component).match(phrase).candidate.key == expected


@pytest.mark.parametrize("phrase, expected", METRIC_PHRASES)
def test_metric_phrasings(phrase, expected):
    assert METRICS.match(phrase).candidate.key == expected


def test_at_least_forty_phrasings_are_checked():
    assert len(PARTS) + len(REPLACEMENTS) >= 40


@pytest.mark.parametrize("a, b, same", [
    ("distill", "distillation", True), ("normalization", "normalisation", True),
    ("prun", "prun", True), ("norm", "normal", True), ("adaptiv", "adapter", False),
    ("gradual", "gradient", False), ("late", "layer", False)])
def test_same_word(a, b, same):
    assert same_word(a, b) is same


def test_words_drop_filler_split_hyphens_and_stem():
    assert words("Outlier-aware salience scoring (mechanism)") == ["outlier", "awar",
                                                                   "salienc", "scor"]
    assert words("the coarse/fine α mix") == ["coars", "fin", "alpha", "mix"]
    assert words("Magnitude-based strategies") == ["magnitud"]


@pytest.mark.parametrize("phrase, closest", [
    ("Layer transformation", "'mask tuning'"), ("the APT", "'apt adapter', 'APT as a whole'"),
    ("pruning", "'early-stage pruning'"), ("energy consumption", None)])
def test_unmatched_parts_list_the_closest_names(phrase, closest):
    with pytest.raises(MatchError) as info:
        ALL.match(phrase)
    message = str(info.value)
    assert f"ablated part {phrase!r} matches no registered ablated part" in message
    assert "Registered: apt adapter, outlier-aware salience" in message
    assert (f"Closest: {closest}" in message) if closest else ("Closest" not in message)


def test_unknown_metric_is_an_error_naming_close_metrics():
    with pytest.raises(MatchError) as info:
        METRICS.match("energy usage")
    message = str(info.value)
    assert "'energy usage' matches no registered metric" in message
    assert "Closest: 'memory usage'" in message and "perplexity" in message


def test_ambiguous_phrase_names_both_candidates():
    matcher = Matcher([Candidate("a", "rank growth", ()), Candidate("b", "rank decay", ())],
                      "part")
    with pytest.raises(MatchError, match="ambiguous between 'rank growth' and 'rank decay'"):
        matcher.match("rank growth decay")


def test_method_is_inferred_from_the_sections():
    sections = [PlanSection("a", part, "remove") for part in
                ("calibration sample search", "alignment factors", "self-distillation")]
    table, reason = infer_method(sections)
    assert table.name == "adapruner" and "2 of 3" in reason
