"""Plan sections -> method, variants (deduplicated), metrics; every problem before any run."""
from __future__ import annotations

import pytest

from lmprune.ablation.components import METHOD_TABLES
from lmprune.ablation.expand import AblationPlanError, build_ablation, choose_base
from lmprune.ablation.plan import parse_markdown, parse_yaml
from lmprune.config import load_config

TINY_TRAIN = ["model.name=tiny-bert", "train.measure=false"]


def plan(*sections: tuple[str, str, list[str], str]):
    text = ""
    for part, action, replacements, metrics in sections:
        text += f"### {part}\n- **Ablated Part**: {part}\n- **Action**: {action}\n"
        if replacements:
            text += "- **Replacement**:\n" + "".join(f"  - {r}\n" for r in replacements)
        if metrics:
            text += f"- **Metrics**: {metrics}\n"
    return parse_markdown(text, "plan.md")


def build(p, **kwargs):
    kwargs.setdefault("base", "ablate-apt-cpu")
    kwargs.setdefault("overrides", TINY_TRAIN)
    return build_ablation(p, **kwargs)


@pytest.mark.parametrize("table", METHOD_TABLES.values(), ids=list(METHOD_TABLES))
def test_every_registered_override_is_a_valid_config(table):
    shorts = [c.short for c in table.components]
    assert len(set(shorts)) == len(shorts) and len({c.name for c in table.components}) == len(
        shorts)
    for component in table.components:
        assert component.remove is not None or component.replacements
        assert component.remove is None or component.remove_meaning
        variants = [component.remove] if component.remove else []
        variants += [o.overrides for o in component.replacements]
        for overrides in variants:
            config = load_config(table.base, [table.method_override, *overrides])
            assert config is not None
        assert len({o.name for o in component.replacements}) == len(component.replacements)


def test_identical_runs_are_shared_and_reference_duplicates_are_not_run():
    a = build(plan(("Dynamic rank adjustment in APT adapter", "REMOVE", [], "task performance"),
                   ("Dynamic parameter addition in salient layers", "REPLACE",
                    ["static parameter allocation", "uniform parameter addition"],
                    "training time"),
                   ("Hidden-dimension pruning", "REMOVE", [], "")))
    assert [v.slug for v in a.variants] == ["rank-growth-remove", "rank-growth-uniform"]
    shared = a.variants[0]
    assert shared.labels == ["adaptive tuning: REMOVE", "adaptive tuning -> static"]
    assert len(shared.sections) == 2 and shared.overrides == ["apt.rank_growth=static"]
    assert a.same_as_reference == ["hidden-dimension pruning: REMOVE"]
    assert a.metrics == ["task performance", "training time"]
    assert a.quantities == ["task", "train_time"]
    assert a.seeds == [0, 1, 2] and a.table.name == "apt"


def test_method_flag_and_yaml_method_override_inference():
    p = parse_yaml("method: sublayer-ri\nablations:\n  - part: progressive search\n"
                   "    action: replace\n    replacement: one-shot\n")
    a = build_ablation(p, base="ablate-llm-cpu", seeds=1)
    assert a.table.name == "sublayer-ri" and a.method_reason == "the plan's `method:`"
    assert a.variants[0].overrides == ["sublayer.progressive=false"]
    assert a.reference.config.prune.method == "sublayer-ri"
    assert a.metrics == ["perplexity", "task performance"] and a.metrics_default
    with pytest.raises(AblationPlanError, match="names 'progressive search' of method "
                                                "sublayer-ri, but this plan is apt"):
        build_ablation(p, method="apt", base="ablate-apt-cpu")


def test_sections_of_two_methods_are_an_error_naming_the_foreign_one():
    p = plan(("Self-knowledge distillation", "REMOVE", [], ""),
             ("EMA of salience", "REMOVE", [], ""),
             ("the alignment factors", "REMOVE", [], ""))
    with pytest.raises(AblationPlanError) as info:
        build(p)
    error = str(info.value)
    assert "section 'the alignment factors' names 'alignment factors' of method adapruner, "\
           "but this plan is apt" in error and "| ### the alignment factors" in error


def test_all_problems_are_reported_together_and_nothing_is_built():
    p = plan(("Self-knowledge distillation", "REMOVE", [], "task performance, energy use"),
             ("Outlier-aware salience", "REPLACE", ["random scoring", "coin flips"], ""),
             ("APT as a whole", "REMOVE", [], "perplexity"),
             ("layer transformation", "REMOVE", [], ""))
    with pytest.raises(AblationPlanError) as info:
        build(p)
    problems = info.value.problems
    assert len(problems) == 5
    text = "\n".join(problems)
    assert "metric 'energy use' matches no registered metric" in text
    assert "(outlier-aware salience): replacement 'coin flips' matches no" in text
    assert "Registered: random, magnitude, gradient:\n" in text
    assert "'APT as a whole' cannot be removed" in text and "lora + prune" in text
    assert "metric 'perplexity' is not measured by train runs" in text
    assert "'layer transformation' matches no registered ablated part" in text


def test_remove_only_component_cannot_be_replaced():
    with pytest.raises(AblationPlanError, match="'self-distillation' has no registered "
                                                "replacement; it can only be removed"):
        build(plan(("self-distillation", "REPLACE", ["a larger teacher"], "")))


def test_metric_needing_a_measurement_the_base_config_skips():
    p = plan(("self-distillation", "REMOVE", [], "inference speed"))
    with pytest.raises(AblationPlanError, match="'inference' needs train.measure=true"):
        build(p)
    assert build(p, overrides=["model.name=tiny-bert"]).quantities == ["inference"]


def test_bad_base_config_or_override_is_its_own_error():
    p = plan(("self-distillation", "REMOVE", [], ""))
    with pytest.raises(Exception, match="unknown config 'nope'"):
        build(p, base="nope")
    with pytest.raises(Exception, match="apt.bogus"):
        build(p, overrides=["apt.bogus=1"])
    with pytest.raises(Exception, match="--seeds must be at least 1"):
        build(p, seeds=0)


def test_default_base_depends_on_the_gpu(monkeypatch):
    import torch

    table = METHOD_TABLES["apt"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_base(table, None)[0] == "ablate-apt-cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_base(table, None)[0] == "ablate-apt"
    assert choose_base(table, "my.yaml") == ("my.yaml", "--base")
