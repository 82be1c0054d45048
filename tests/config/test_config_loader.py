"""The generic YAML → dataclass loader, on small schemas defined here (not RunConfig)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pytest
import yaml

from lmprune.config import (
    Section,
    build,
    dump_yaml,
    dumps_yaml,
    from_dict,
    load,
    param,
    section,
    to_dict,
)
from lmprune.errors import ConfigError


@dataclass
class Inner(Section):
    a: int = param(1, "a positive int")
    tags: list[str] = param(["x"], "some strings")

    def validate(self) -> list[str]:
        return [f"a: must be positive, got {self.a}"] if self.a <= 0 else []


@dataclass
class Outer(Section):
    inner: Inner = section(Inner, "a nested section")
    name: str = param("n", "a name")
    ratio: float = param(0.5, "a number")
    flag: bool = param(False, "a switch")
    maybe: int | None = param(None, "an int or null")
    mode: Literal["fast", "slow"] = param("fast", "a choice")
    pair: tuple[int, int] = param((1, 2), "exactly two ints")
    many: tuple[float, ...] = param((), "any number of numbers")
    table: dict[str, int] = param({}, "free keys, int values")
    items: list[Inner] = param([], "a list of sections")
    either: int | str = param(0, "an int or a string")
    anything: Any = param(None, "not checked")

    def validate(self) -> list[str]:
        return ["ratio: must not exceed 1"] if self.ratio > 1 else []


@dataclass
class Needs:  # a plain dataclass (no Section): required fields, no validate()
    x: int = param(help="required")
    y: str = "a"


def problems_of(cls, data, overrides=()):
    obj, problems = build(cls, data, overrides)
    assert (obj is None) == bool(problems)
    return problems


def single(cls, data, overrides=()):
    problems = problems_of(cls, data, overrides)
    assert len(problems) == 1, problems
    return problems[0]


# ------------------------------------------------------------------------------- conversion

def test_nested_conversion_builds_typed_objects():
    cfg = from_dict(Outer, {
        "inner": {"a": 3, "tags": ["p", "q"]}, "name": "m", "ratio": 1, "flag": True,
        "maybe": 7, "mode": "slow", "pair": [4, 5], "many": [1, 2.5], "table": {"k": 1},
        "items": [{"a": 2}, {}], "either": "s", "anything": {"free": [1]},
    })
    assert cfg.inner == Inner(a=3, tags=["p", "q"])
    assert cfg.ratio == 1.0 and isinstance(cfg.ratio, float)
    assert cfg.pair == (4, 5) and cfg.many == (1.0, 2.5)
    assert cfg.items == [Inner(a=2), Inner()]
    assert (cfg.name, cfg.flag, cfg.maybe, cfg.mode, cfg.either) == ("m", True, 7, "slow", "s")
    assert cfg.table == {"k": 1} and cfg.anything == {"free": [1]}


def test_empty_input_gives_defaults_and_defaults_are_not_shared():
    a, b = from_dict(Outer, None), from_dict(Outer, {})
    assert a == Outer()
    a.inner.tags.append("y")
    assert b.inner.tags == ["x"]


@pytest.mark.parametrize("data, path, expected", [
    ({"inner": {"a": "3"}}, "inner.a", "expected integer, got string '3'"),
    ({"inner": {"a": 1.0}}, "inner.a", "expected integer, got number 1.0"),
    ({"inner": {"a": True}}, "inner.a", "expected integer, got true"),
    ({"ratio": "half"}, "ratio", "expected number, got string 'half'"),
    ({"ratio": False}, "ratio", "expected number, got false"),
    ({"flag": "yes please"}, "flag", "expected true or false"),
    ({"name": 3}, "name", "expected string, got integer 3"),
    ({"name": None}, "name", "expected string, got null"),
    ({"maybe": "x"}, "maybe", "expected integer, got string 'x'"),
    ({"mode": "fsat"}, "mode", "expected one of 'fast', 'slow', got string 'fsat'. "
                               "Did you mean 'fast'?"),
    ({"pair": [1]}, "pair", "expected list of 2 items (integer, integer)"),
    ({"pair": 1}, "pair", "expected list of 2 items"),
    ({"many": [1, "b"]}, "many[1]", "expected number, got string 'b'"),
    ({"inner": {"tags": "p"}}, "inner.tags", "expected list of string, got string 'p'"),
    ({"inner": {"tags": ["p", 2]}}, "inner.tags[1]", "expected string, got integer 2"),
    ({"table": {"k": "v"}}, "table.k", "expected integer, got string 'v'"),
    ({"table": [1]}, "table", "expected mapping, got list [1]"),
    ({"inner": 5}, "inner", "expected a mapping of Inner fields, got integer 5"),
    ({"items": [{"a": "z"}]}, "items[0].a", "expected integer"),
    ({"either": 1.5}, "either", "expected integer or string, got number 1.5"),
])
def test_type_errors_name_the_path_and_the_expected_type(data, path, expected):
    problem = single(Outer, data)
    assert problem.startswith(f"{path}: "), problem
    assert expected in problem


def test_lenient_numbers():
    cfg = from_dict(Outer, {"ratio": "1e-3", "many": [2]})  # YAML 1.1 reads 1e-3 as a string
    assert cfg.ratio == 1e-3 and cfg.many == (2.0,)


def test_unknown_keys_suggest_close_names_and_list_valid_ones():
    problem = single(Outer, {"inner": {"aa": 1}})
    assert problem.startswith("inner.aa: unknown key.")
    assert "Did you mean 'a'?" in problem and "Valid keys here: a, tags." in problem
    problem = single(Outer, {"nmae": "x"})
    assert "Did you mean 'name'" in problem


def test_unknown_key_that_lives_in_another_section_points_there():
    problem = single(Outer, {"tags": ["x"]})
    assert "Did you mean 'inner.tags'?" in problem


def test_missing_required_field():
    problem = single(Needs, {"y": "b"})
    assert problem == "x: missing required field (required)"
    assert from_dict(Needs, {"x": 1}) == Needs(x=1)


def test_validate_runs_at_every_level_with_dotted_paths():
    problems = problems_of(Outer, {"ratio": 2, "inner": {"a": 0}, "items": [{}, {"a": -1}]})
    assert problems == ["ratio: must not exceed 1", "inner.a: must be positive, got 0",
                        "items[1].a: must be positive, got -1"]


def test_every_problem_is_reported_at_once():
    data = {"inner": {"a": 0, "b": 1}, "ratio": "x", "mode": "medium", "nope": 1,
            "items": [{"a": "1"}]}
    with pytest.raises(ConfigError) as info:
        from_dict(Outer, data, ["flag=maybe", "inner.zz=1"], source="test.yaml")
    text = str(info.value)
    assert text.startswith("8 problem(s) in config test.yaml:")
    for fragment in ["inner.b: unknown key", "ratio: expected number", "mode: expected one of",
                     "nope: unknown key", "items[0].a: expected integer",
                     "flag: expected true or false, got string 'maybe'",
                     "inner.zz: unknown key"]:
        assert fragment in text, fragment
    # inner.a=0 is a validate() problem of the same section: collected as well
    assert "inner.a: must be positive, got 0" in text


def test_sections_validate_when_built_in_python():
    with pytest.raises(ConfigError, match="a: must be positive, got -2"):
        Inner(a=-2)
    assert Inner(a=2).a == 2


def test_non_mapping_top_level():
    assert single(Outer, ["a"]) == "expected a mapping of Outer fields, got list ['a']"


# -------------------------------------------------------------------------------- overrides

def test_overrides_are_typed_by_yaml_and_follow_dotted_paths():
    cfg = from_dict(Outer, {"inner": {"a": 2}}, [
        "inner.a=5", "ratio=0.25", "flag=true", "maybe=null", "inner.tags=[u, v]",
        "pair=[7, 8]", "table.new=3", "mode=slow", "anything={k: [1, 2]}"])
    assert cfg.inner == Inner(a=5, tags=["u", "v"])
    assert (cfg.ratio, cfg.flag, cfg.maybe, cfg.mode) == (0.25, True, None, "slow")
    assert cfg.pair == (7, 8) and cfg.table == {"new": 3} and cfg.anything == {"k": [1, 2]}


def test_string_fields_keep_the_raw_text():
    cfg = from_dict(Outer, {}, ["name=1234", "mode=slow", "either=3"])
    assert (cfg.name, cfg.either) == ("1234", 3)
    # inside a list the YAML types stay: 1 is not a string
    assert single(Outer, {}, ["inner.tags=[1, two]"]).startswith("inner.tags[0]: expected string")


def test_later_override_wins_and_mapping_values_merge():
    cfg = from_dict(Outer, {"inner": {"a": 2, "tags": ["k"]}}, ["ratio=0.1", "ratio=0.2",
                                                                 "inner={a: 9}"])
    assert cfg.ratio == 0.2 and cfg.inner == Inner(a=9, tags=["k"])


def test_unknown_override_path_suggests():
    problem = single(Outer, {}, ["inner.tgas=[a]"])
    assert problem.startswith("inner.tgas: unknown key. Did you mean 'tags'?")
    assert "in override 'inner.tgas=[a]'" in problem
    assert "Did you mean 'inner.tags'?" in single(Outer, {}, ["tags=[a]"])


def test_malformed_overrides():
    problems = problems_of(Outer, {}, ["ratio", "=3", "inner..a=1", "name.x=1"])
    assert problems[:3] == [f"override {o!r} is not of the form key=value "
                            f"(e.g. prune.sparsity=0.3)" for o in ["ratio", "=3", "inner..a=1"]]
    assert problems[3].startswith("name.x: name is string, not a section")


def test_type_errors_from_overrides_say_which_override():
    problem = single(Outer, {}, ["inner.a=-1"])
    assert problem == "inner.a: must be positive, got -1 (set by override 'inner.a=-1')"


def test_override_into_a_scalar_of_the_file_is_reported():
    problems = problems_of(Outer, {"inner": 3}, ["inner.a=1"])
    assert any("cannot apply override 'inner.a=1'" in p for p in problems)


# ---------------------------------------------------------------------------------- YAML io

def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_file_with_overrides(tmp_path):
    path = write(tmp_path, "inner:\n  a: 2\nname: file\n")
    assert load(Outer, path, ["inner.tags=[z]"]) == Outer(inner=Inner(a=2, tags=["z"]),
                                                            name="file")
    assert load(Outer, None, ["name=q"]) == Outer(name="q")


def test_file_and_override_problems_are_raised_together_with_the_file_name(tmp_path):
    path = write(tmp_path, "inner:\n  a: zero\nrato: 1\n")
    with pytest.raises(ConfigError) as info:
        load(Outer, path, ["flag=7"])
    assert str(path) in str(info.value).splitlines()[0]
    assert len(info.value.problems) == 3


def test_yaml_syntax_error_duplicate_keys_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="invalid YAML"):
        load(Outer, write(tmp_path, "inner: [1,\n"))
    with pytest.raises(ConfigError, match=r"duplicate key 'name' \(first given on line 1\)"):
        load(Outer, write(tmp_path, "name: a\nflag: true\nname: b\n"))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load(Outer, write(tmp_path, "- 1\n- 2\n"))
    assert load(Outer, write(tmp_path, "# only a comment\n")) == Outer()


def test_yaml_error_still_reports_override_problems(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(Outer, write(tmp_path, "a: [\n"), ["nope=1"])
    assert len(info.value.problems) == 2


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load(Outer, tmp_path / "absent.yaml")


# ------------------------------------------------------------------------------ round trips

TRICKY = Outer(inner=Inner(a=4, tags=["null", "yes", "1e-3", "a: b", "", "multi\nline"]),
               name="0.5", ratio=1e-7, flag=True, maybe=None, mode="slow", pair=(0, -1),
               many=(float("inf"), 2.0), table={"k": 1, "true": 2}, items=[Inner(a=9)],
               either="12", anything={"nested": [1, {"x": None}]})


@pytest.mark.parametrize("comments", [False, True])
def test_dump_then_load_gives_an_equal_object(tmp_path, comments):
    path = dump_yaml(TRICKY, tmp_path / "sub" / "out.yaml", comments=comments)
    assert load(Outer, path) == TRICKY


def test_dump_layout_and_comments():
    text = dumps_yaml(Outer(), comments=True)
    assert "inner:\n  # a positive int\n  a: 1\n  # some strings\n  tags: [x]\n" in text
    assert "pair: [1, 2]" in text and "maybe: null" in text
    assert "#" not in dumps_yaml(Outer())


def test_to_dict_is_plain_data_in_field_order():
    data = to_dict(TRICKY)
    assert list(data) == ["inner", "name", "ratio", "flag", "maybe", "mode", "pair", "many",
                          "table", "items", "either", "anything"]
    assert data["pair"] == [0, -1] and data["items"] == [{"a": 9, "tags": ["x"]}]
    assert yaml.safe_load(yaml.safe_dump(data)) == data
    assert from_dict(Outer, data) == TRICKY
