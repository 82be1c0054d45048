"""The shipped example plans cover every contract component; the docs list every component."""
from __future__ import annotations

from pathlib import Path

import pytest

from lmprune.ablation import build_ablation, read_plan
from lmprune.ablation.components import METHOD_TABLES

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = {"apt/plan.md": "ablate-apt", "sublayer-ri/plan.md": "ablate-llm",
            "adapruner/plan.yaml": "ablate-llm"}
#: Components every ablation switch of the contract belongs to (docs/ablation.md).
CONTRACT = {
    "apt": {"apt adapter", "outlier-aware salience", "self-distillation",
            "parameter sharing in self-distillation", "adaptive tuning",
            "early-stage pruning", "salience ema", "hidden-dimension pruning"},
    "sublayer-ri": {"normalization in RI", "progressive search"},
    "adapruner": {"calibration sample search", "coarse/fine alpha mix", "alignment factors",
                  "TPE search"},
}


@pytest.fixture(scope="module")
def ablations():
    return {name: build_ablation(read_plan(ROOT / "examples" / "ablations" / name), base=base)
            for name, base in EXAMPLES.items()}


def test_example_plans_cover_every_contract_component(ablations):
    covered: dict[str, set[str]] = {}
    for a in ablations.values():
        covered.setdefault(a.table.name, set()).update(s.component.name for s in a.sections)
    for method, components in CONTRACT.items():
        assert components <= covered[method], components - covered[method]


def test_example_plans_expand_as_documented(ablations):
    apt = ablations["apt/plan.md"]
    assert len(apt.variants) == 15 and apt.same_as_reference == [
        "hidden-dimension pruning: REMOVE"]
    options = {o for s in apt.sections for _, o, _ in s.variants if o}
    assert {o.name for o in options} == {"random", "magnitude", "gradient", "static", "uniform",
                                         "late", "gradual", "one-shot", "lora + prune"}
    assert len(ablations["sublayer-ri/plan.md"].variants) == 2
    assert len(ablations["adapruner/plan.yaml"].variants) == 4


def test_docs_table_lists_every_component():
    docs = (ROOT / "docs" / "ablation.md").read_text()
    for table in METHOD_TABLES.values():
        for component in table.components:
            assert f"| {table.name} | {component.name} |" in docs, component.name
