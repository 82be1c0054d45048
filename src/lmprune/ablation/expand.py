"""A parsed plan -> the runs it needs: method, base config, reference, variants, quantities.

1. **Method.** ``--method`` (or a YAML plan's ``method:``) decides; otherwise each section's
   ablated part is matched against every method's components and the method most sections
   name wins. A section naming another method's component is an error (one method per plan).
2. **Components and replacements** are matched within that method (:mod:`.matching`);
   REMOVE needs a component that can be removed, REPLACE needs registered alternatives.
3. **Metrics** are matched to :data:`.metrics.METRIC_PHRASES`, then to the quantities of
   the method's recipe; a plan that names none gets the recipe's defaults.
4. **Variants**: one per REMOVE, one per replacement, each the base config with its
   overrides. Variants whose resolved configs are equal run once (listed under every section
   that asked for them); a variant equal to the reference is reported and not run.

Every problem of every section is collected and raised together before anything runs.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lmprune.ablation.components import METHOD_TABLES, Component, MethodTable, Option, method_table
from lmprune.ablation.matching import Candidate, Matcher, MatchError
from lmprune.ablation.metrics import MATCHER as METRIC_MATCHER
from lmprune.ablation.metrics import PHRASES, QUANTITIES, quantities_for
from lmprune.ablation.plan import Plan, PlanSection
from lmprune.errors import ConfigError, LmpruneError

DEFAULT_METRICS = {"train": ("task performance",), "prune": ("perplexity", "task performance")}


class AblationPlanError(LmpruneError):
    """Sections that cannot be understood: every problem at once, nothing run."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) understanding the ablation plan "
                         "(nothing was run):\n" + "\n".join(
                             "  - " + p.replace("\n", "\n    ") for p in problems))


@dataclass
class Variant:
    slug: str
    labels: list[str]  # "self-distillation: REMOVE", one per section that asked for it
    overrides: list[str]
    sections: list[str] = field(default_factory=list)
    config: object = None  # the resolved RunConfig (seed and output set per run)

    @property
    def label(self) -> str:
        return " = ".join(self.labels)


@dataclass
class UnderstoodSection:
    section: PlanSection
    component: Component
    alias: str  # the registered phrasing it matched
    variants: list[tuple[str, Option | None, tuple[str, ...]]]  # (label, option, overrides)
    metrics: list[tuple[str, str]]  # (as written, registered metric)


@dataclass
class Ablation:
    table: MethodTable
    method_reason: str
    base: str
    base_reason: str
    overrides: list[str]  # the user's, applied to every run
    seeds: list[int]
    sections: list[UnderstoodSection]
    reference: Variant
    variants: list[Variant]
    same_as_reference: list[str]  # labels of variants identical to the reference
    metrics: list[str]  # registered metric names, in order of first mention
    metrics_default: bool
    quantities: list[str]
    plan_source: str = ""

    @property
    def recipe(self) -> str:
        return self.table.recipe

    def all_variants(self) -> list[Variant]:
        return [self.reference, *self.variants]


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "variant"


# ------------------------------------------------------------------------------ the method

def _component_matcher(tables) -> Matcher:
    return Matcher([Candidate(f"{t.name}/{c.name}", c.name, c.aliases)
                    for t in tables for c in t.components], "ablated part")


def infer_method(sections: list[PlanSection]) -> tuple[MethodTable, str]:
    """The method most sections' parts belong to, and a sentence saying why."""
    matcher = _component_matcher(METHOD_TABLES.values())
    votes: Counter = Counter()
    score: Counter = Counter()
    for s in sections:
        try:
            best = matcher.match(s.part)
        except MatchError:
            continue
        method = best.candidate.key.split("/")[0]
        votes[method] += 1
        score[method] += best.score
    if not votes:
        names = ", ".join(METHOD_TABLES)
        raise AblationPlanError([
            "no section names a registered component of any method (" + names + "); "
            "`lmprune ls components` lists them; pass --method to get the closest names of "
            "one method:\n" + "\n".join(
                f"  {s.title}: {s.part!r}" for s in sections)])
    method = max(votes, key=lambda m: (votes[m], score[m]))
    n = votes[method]
    return METHOD_TABLES[method], (f"inferred: {n} of {len(sections)} section(s) name "
                                   f"components of {method}")


# ----------------------------------------------------------------------------- a section

def _variants(section: PlanSection, component: Component, problems: list[str]):
    where = f"section {section.title!r}"
    if section.action == "remove":
        if component.remove is None:
            options = ", ".join(o.name for o in component.replacements)
            problems.append(f"{where}: {component.name!r} cannot be removed (it has no off "
                            f"switch); REPLACE it with one of: {options}:\n{section.quote()}")
            return []
        return [(f"{component.name}: REMOVE", None, component.remove)]
    if not component.replacements:
        problems.append(f"{where}: {component.name!r} has no registered replacement; it can "
                        f"only be removed (REMOVE: {component.remove_meaning}):\n"
                        f"{section.quote()}")
        return []
    matcher = Matcher([Candidate(o.name, o.name, o.aliases) for o in component.replacements],
                      "replacement")
    out = []
    for text in section.replacements:
        try:
            option = component.option(
                matcher.match(text, f"{where} ({component.name})").candidate.key)
        except MatchError as exc:
            problems.append(f"{exc}:\n{section.quote()}")
            continue
        out.append((f"{component.name} -> {option.name}", option, option.overrides))
    return out


def _metrics(section: PlanSection, recipe: str, problems: list[str]) -> list[tuple[str, str]]:
    out = []
    where = f"section {section.title!r}"
    for text in section.metrics:
        try:
            name = METRIC_MATCHER.match(text, where).candidate.key
        except MatchError as exc:
            problems.append(str(exc))
            continue
        try:
            quantities_for(PHRASES[name], recipe)
        except LmpruneError as exc:
            problems.append(f"{where}: {exc}")
            continue
        out.append((text, name))
    return out


def understand(plan: Plan, method: str | None = None) -> tuple[MethodTable, str,
                                                              list[UnderstoodSection]]:
    """Method, reason, and each section matched; :class:`AblationPlanError` lists problems."""
    chosen = method or plan.method
    if chosen:
        table = method_table(chosen)
        reason = "--method" if method else "the plan's `method:`"
    else:
        table, reason = infer_method(plan.sections)
    mine = _component_matcher([table])
    others = _component_matcher([t for t in METHOD_TABLES.values() if t is not table])
    problems: list[str] = []
    understood = []
    for s in plan.sections:
        try:
            best = mine.match(s.part, f"section {s.title!r}")
        except MatchError as exc:
            problems.append(_foreign(s, table, others) or f"{exc}:\n{s.quote()}")
            continue
        component = table.component(best.candidate.label)
        variants = _variants(s, component, problems)
        understood.append(UnderstoodSection(s, component, best.alias, variants,
                                            _metrics(s, table.recipe, problems)))
    if problems:
        raise AblationPlanError(problems)
    return table, reason, understood


def _foreign(section: PlanSection, table: MethodTable, others: Matcher) -> str | None:
    try:
        best = others.match(section.part)
    except MatchError:
        return None
    method, name = best.candidate.key.split("/", 1)
    return (f"section {section.title!r} names {name!r} of method {method}, but this plan is "
            f"{table.name}: one method per plan (split the plan, or pass --method {method} "
            f"for a plan of {method} components):\n{section.quote()}")


# ----------------------------------------------------------------------------- the runs

def choose_base(table: MethodTable, base: str | None) -> tuple[str, str]:
    if base:
        return base, "--base"
    import torch

    if torch.cuda.is_available():
        return table.base, f"GPU found: the shipped {table.base} schedule"
    return table.base_cpu, (f"no GPU found: the shipped cut-down CPU schedule; --base "
                            f"{table.base} for the GPU one")


def _resolve(base: str, overrides: list[str], where: str, problems: list[str]):
    from lmprune.config import load_config

    try:
        return load_config(base, overrides)
    except ConfigError as exc:
        problems.append(f"{where}: " + "; ".join(exc.problems))
    except LmpruneError as exc:
        problems.append(f"{where}: {exc}")
    return None


def _identity(config) -> str:
    from lmprune.config import to_dict

    data = to_dict(config)
    data.pop("output", None)
    return repr(data)


def _expand(sections: list[UnderstoodSection], base: str, head: list[str],
            reference: Variant, problems: list[str]) -> tuple[list[Variant], list[str]]:
    """Variants with equal resolved configs merged; labels of those equal to the reference."""
    by_identity = {_identity(reference.config): reference}
    variants, same = [], []
    for s in sections:
        for label, option, overrides in s.variants:
            config = _resolve(base, [*head, *overrides], label, problems)
            if config is None:
                continue
            known = by_identity.get(_identity(config))
            if known is reference:
                same.append(label)
            elif known is not None:
                if label not in known.labels:
                    known.labels.append(label)
                known.sections.append(s.section.title)
            else:
                slug = f"{s.component.short}-{option.name if option else 'remove'}"
                variant = Variant(_unique_slug(slug, variants), [label], list(overrides),
                                  [s.section.title], config)
                variants.append(variant)
                by_identity[_identity(config)] = variant
    return variants, same


def build_ablation(plan: Plan, *, method: str | None = None, base: str | None = None,
                   overrides: list[str] | None = None, seeds: int = 3) -> Ablation:
    """Everything needed to run ``plan``, checked; nothing is run."""
    from lmprune.config import load_config

    if seeds < 1:
        raise LmpruneError(f"--seeds must be at least 1, got {seeds}")
    table, reason, sections = understand(plan, method)
    base_name, base_reason = choose_base(table, base)
    user = list(overrides or [])
    head = [table.method_override, *user]
    reference_config = load_config(base_name, head)  # a bad base or override: its own error
    reference = Variant("reference", ["reference (full method)"], [], [], reference_config)
    problems: list[str] = []
    variants, same = _expand(sections, base_name, head, reference, problems)
    metrics = list(dict.fromkeys(name for s in sections for _, name in s.metrics))
    defaulted = not metrics
    if defaulted:
        metrics = list(DEFAULT_METRICS[table.recipe])
    quantities = list(dict.fromkeys(q for name in metrics
                                    for q in quantities_for(PHRASES[name], table.recipe)))
    for q in quantities:
        problem = QUANTITIES[table.recipe][q].requires(reference_config)
        if problem:
            problems.append(f"metric quantity {q!r} {problem} in the base config "
                            f"{base_name} (pass it as key=value)")
    if problems:
        raise AblationPlanError(problems)
    first = reference_config.seed
    return Ablation(table, reason, base_name, base_reason, user,
                    list(range(first, first + seeds)), sections, reference, variants, same,
                    metrics, defaulted, quantities, plan.source)


def _unique_slug(name: str, variants: list[Variant]) -> str:
    slug = slugify(name)
    taken = {v.slug for v in variants} | {"reference"}
    candidate, n = slug, 2
    while candidate in taken:
        candidate, n = f"{slug}-{n}", n + 1
    return candidate


def plan_copy_name(source: str) -> str:
    return "plan" + (Path(source).suffix or ".md")
