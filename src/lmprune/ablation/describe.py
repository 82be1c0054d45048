"""How a plan was understood, in words: the dry run's output and the head of results.md."""
from __future__ import annotations

from lmprune.ablation.expand import Ablation
from lmprune.ablation.metrics import PHRASES, QUANTITIES, quantities_for

RECIPE_COMMAND = {"train": "lmprune train", "prune": "lmprune prune"}


def understanding(ablation: Ablation) -> list[str]:
    """Lines: method, base, seeds, each section's match and variants, metrics, run count."""
    a = ablation
    lines = [
        f"plan: {a.plan_source or '-'} ({len(a.sections)} section(s))",
        f"method: {a.table.name} ({a.method_reason}); runs: {RECIPE_COMMAND[a.recipe]} "
        f"with {a.table.method_override}",
        f"base config: {a.base} ({a.base_reason})",
        "overrides for every run: " + (" ".join(a.overrides) if a.overrides else "none"),
        f"seeds: {', '.join(map(str, a.seeds))} (set: {', '.join(a.table.seed_fields)})",
        "", "sections:"]
    slugs = {label: v.slug for v in a.variants for label in v.labels}
    for s in a.sections:
        lines.append(f"  - {s.section.title}: {s.section.part!r} -> {s.component.name} "
                     f"(matched {s.alias!r}); {s.section.action.upper()}")
        if s.section.action == "remove":
            lines.append(f"       meaning: {s.component.remove_meaning}")
        for text, (label, option, overrides) in zip(_written(s), s.variants):
            said = f"{text!r} -> {option.name}: " if option else ""
            where = slugs.get(label)
            target = f"variant {where}" if where else "identical to the reference, not run"
            lines.append(f"       {said}{' '.join(overrides)}  [{target}]")
            if option:
                lines.append(f"         meaning: {option.meaning}")
        if s.metrics:
            lines.append("       metrics: " + ", ".join(f"{t!r} -> {n}" for t, n in s.metrics))
    lines += ["", "metrics" + (" (the plan names none: defaults)" if a.metrics_default else "")
              + ":"]
    table = QUANTITIES[a.recipe]
    for name in a.metrics:
        keys = quantities_for(PHRASES[name], a.recipe) or ("(the always-shown column)",)
        lines.append(f"  {name} -> " + "; ".join(
            table[k].description if k in table else k for k in keys))
    lines.append("  every row also shows: " + table[_always(a)].description)
    lines += ["", _count(a)]
    if a.same_as_reference:
        lines.append("  not run, identical to the reference with this base config: "
                     + "; ".join(a.same_as_reference))
    shared = [v for v in a.variants if len(v.labels) > 1 or len(v.sections) > 1]
    for v in shared:
        lines.append(f"  shared by several sections: {v.slug} ({v.label})")
    return lines


def _written(section) -> list[str]:
    if section.section.action == "remove":
        return ["REMOVE"]
    # replacements that failed to match raised earlier, so the texts line up with variants
    return list(section.section.replacements)


def _always(a: Ablation) -> str:
    from lmprune.ablation.metrics import ALWAYS

    return ALWAYS[a.recipe]


def _count(a: Ablation) -> str:
    n = 1 + len(a.variants)
    return (f"runs: {n} configurations (reference + {len(a.variants)} variant(s)) x "
            f"{len(a.seeds)} seed(s) = {n * len(a.seeds)} runs")


def variant_table(ablation: Ablation) -> list[str]:
    """Markdown rows: variant, what the plan called it, sections, overrides."""
    rows = ["| variant | what | plan sections | overrides |", "| --- | --- | --- | --- |"]
    for v in ablation.all_variants():
        rows.append(f"| {v.slug} | {v.label} | {'; '.join(dict.fromkeys(v.sections)) or '-'} "
                    f"| {' '.join(f'`{o}`' for o in v.overrides) or '-'} |")
    return rows
