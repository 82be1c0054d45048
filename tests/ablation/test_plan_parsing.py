"""Plans as people write them: HTML-wrapped markdown with a preamble, plain markdown, YAML."""
from __future__ import annotations

from pathlib import Path

import pytest

from lmprune.ablation.plan import PlanFormatError, parse_markdown, parse_yaml, read_plan

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "ablations"

WRAPPED = """<div class="plan">
<style>
  h2 { color: #333; }   /* - **Action**: not a field, it is CSS */
</style>
<h2>Reasoning</h2>
<p>The adapter is claimed to matter. Action: we remove it and see.
- **Note**: this line is prose in the preamble.</p>
<h2>Ablation plan</h2>

### 1. APT adapter
- **Ablated Part**: APT adapter
- **Action**: REMOVE
- **Rationale**: removing it tests the claim
- **Metrics**: task performance, training time

### 2. Salience
- **Ablated Part:** Outlier-aware salience
  scoring (mechanism)
- **Action:** replace.
- **Replacement**:
  - random scoring
  - *magnitude-based* scoring
- **Metrics**: task performance and memory usage; convergence speed
</div>
"""

HTML_LISTS = """<div><h3>Distillation</h3><ul>
<li><strong>Ablated Part</strong>: Self-knowledge distillation</li>
<li><strong>Action</strong>: REMOVE</li>
<li><strong>Metrics</strong>: task performance</li></ul>
<h3>Schedule</h3><ul>
<li><b>Ablated Part:</b> Early-stage pruning (strategy)</li>
<li><b>Action:</b> REPLACE</li>
<li><b>Replacement</b>:<ul><li>late pruning</li><li>one-shot pruning at initialization</li>
</ul></li></ul></div>"""


def test_html_wrapped_markdown_with_a_preamble():
    plan = parse_markdown(WRAPPED, "plan.md")
    assert [s.title for s in plan.sections] == ["1. APT adapter", "2. Salience"]
    adapter, salience = plan.sections
    assert (adapter.part, adapter.action, adapter.replacements) == ("APT adapter", "remove", [])
    assert adapter.metrics == ["task performance", "training time"]
    assert salience.part == "Outlier-aware salience scoring (mechanism)"
    assert salience.action == "replace"
    assert salience.replacements == ["random scoring", "magnitude-based scoring"]
    assert salience.metrics == ["task performance", "memory usage", "convergence speed"]
    assert "- **Ablated Part**: APT adapter" in adapter.text


def test_html_lists_and_bold_tags():
    plan = parse_markdown(HTML_LISTS)
    assert [(s.title, s.part, s.action) for s in plan.sections] == [
        ("Distillation", "Self-knowledge distillation", "remove"),
        ("Schedule", "Early-stage pruning (strategy)", "replace")]
    assert plan.sections[1].replacements == ["late pruning", "one-shot pruning at initialization"]


def test_inline_replacements_and_plain_field_names():
    plan = parse_markdown("### A\n1. Ablated Part: TPE\n2. Action: Replace\n"
                          "3. Replacement: random search, grid search\n")
    assert plan.sections[0].replacements == ["random search", "grid search"]


def test_replacement_saying_none_under_remove_is_no_replacement():
    plan = parse_markdown("### A\n- **Ablated Part**: EMA\n- **Action**: REMOVE\n"
                          "- **Replacement**: N/A\n- **Metrics**: accuracy\n")
    assert plan.sections[0].replacements == [] and plan.sections[0].metrics == ["accuracy"]


def test_yaml_plan_with_method_and_mixed_field_spellings():
    plan = parse_yaml("""
method: adapruner
ablations:
  - name: samples
    ablated_part: the calibration-sample search
    action: REMOVE
    metrics: perplexity, task performance
  - Ablated Part: TPE
    Action: replace
    Replacement: [random search]
    Metrics: [perplexity]
""", "p.yaml")
    assert plan.method == "adapruner"
    assert [(s.title, s.part, s.action, s.replacements, s.metrics) for s in plan.sections] == [
        ("samples", "the calibration-sample search", "remove", [], ["perplexity",
                                                                    "task performance"]),
        ("ablation 2", "TPE", "replace", ["random search"], ["perplexity"])]


def test_yaml_mapping_of_named_ablations():
    plan = parse_yaml("distill:\n  part: self-distillation\n  action: remove\n")
    assert plan.sections[0].title == "distill" and plan.sections[0].action == "remove"


@pytest.mark.parametrize("text, message", [
    ("# Plan\n\nWe will think about it.\n", "no ablation section found"),
    ("### Adapter\n- **Ablated Part**: APT adapter\n- **Action**: DISABLE\n",
     "section 'Adapter' has unknown action 'DISABLE'; use REMOVE or REPLACE"),
    ("### Schedule\n- **Ablated Part**: early-stage pruning\n- **Action**: REPLACE\n"
     "- **Metrics**: task performance\n", "section 'Schedule' says REPLACE but lists no "
                                          "replacement"),
    ("### Adapter\n- **Action**: REMOVE\n", "section 'Adapter' names no ablated part"),
    ("### Adapter\n- **Ablated Part**: APT adapter\n", "section 'Adapter' has no action"),
    ("### EMA\n- **Ablated Part**: EMA\n- **Action**: REMOVE\n- **Replacement**: none at all\n",
     "says REMOVE but lists replacements"),
])
def test_bad_sections_are_errors_that_quote_the_section(text, message):
    with pytest.raises(PlanFormatError) as info:
        parse_markdown(text, "plan.md")
    error = str(info.value)
    assert message in error and "nothing was run" in error and "plan.md" in error
    if "no ablation section" not in message:
        assert "  | ### " in error  # the offending section, quoted


def test_every_problem_is_reported_at_once():
    text = ("### A\n- **Ablated Part**: x\n- **Action**: DROP\n"
            "### B\n- **Ablated Part**: y\n- **Action**: REPLACE\n")
    with pytest.raises(PlanFormatError) as info:
        parse_markdown(text)
    assert len(info.value.problems) == 2


def test_yaml_errors():
    with pytest.raises(PlanFormatError, match="invalid YAML"):
        parse_yaml("ablations: [\n")
    with pytest.raises(PlanFormatError, match="no ablation section found"):
        parse_yaml("something: else\n")
    with pytest.raises(PlanFormatError, match="section 'x' has unknown action 'keep'"):
        parse_yaml("ablations:\n  - name: x\n    part: TPE\n    action: keep\n")


@pytest.mark.parametrize("name", ["apt/plan.md", "sublayer-ri/plan.md", "adapruner/plan.yaml"])
def test_shipped_example_plans_parse(name):
    plan = read_plan(EXAMPLES / name)
    assert plan.sections and all(s.metrics for s in plan.sections)
