"""Ablations: a written plan -> variants of the existing recipes -> one table with seeds.

    plan.py        markdown / HTML-wrapped markdown / YAML -> sections (part, action, ...)
    components.py  each method's ablatable components as data (REMOVE / REPLACE overrides)
    matching.py    free text -> registered names, robust to phrasing, or a clear error
    metrics.py     metric phrases -> quantities the recipes measure -> numbers
    expand.py      sections -> method, base config, reference and deduplicated variants
    describe.py    how a plan was understood (the dry run)
    runner.py      the recipe runs, resumable by variant and seed
    results.py     mean ± std over seeds, delta to the reference, seed-noise test
    report.py      results.md, results.csv and the plots (plots.py)

Nothing in the methods knows that an ablation is running: a variant is a config.
"""
from lmprune.ablation.expand import Ablation, build_ablation
from lmprune.ablation.plan import Plan, PlanSection, read_plan

__all__ = ["Ablation", "Plan", "PlanSection", "build_ablation", "read_plan"]
