"""RunConfig's checks, load_config / validate_file, and every shipped config."""
from __future__ import annotations

import dataclasses

import pytest

from lmprune import registry
from lmprune.config import (
    STRUCTURES,
    PruneConfig,
    RunConfig,
    dump_yaml,
    load_config,
    resolve_config,
    shipped_configs,
    validate_file,
)
from lmprune.errors import ConfigError, LmpruneError, UnknownNameError
from lmprune.registry import Registry


@pytest.fixture
def methods(monkeypatch):
    """A registry holding 'random' and 'magnitude' in place of the built-in one."""
    fake = Registry("method", hint="Run `lmprune ls methods` to see them all.")
    fake.register("random", object(), help="baseline")
    fake.register("magnitude", object(), help="norms")
    monkeypatch.setattr(registry, "METHODS", fake)
    monkeypatch.setattr(registry, "load_builtin_methods", lambda: fake)
    return fake


def problems(*overrides):
    return validate_file(None, list(overrides))


def test_defaults(methods):
    cfg = load_config(None, [])
    assert cfg == RunConfig()
    assert (cfg.model.name, cfg.model.dtype, cfg.data.calibration, cfg.prune.method,
            cfg.prune.sparsity, cfg.prune.structures, cfg.output.dir) == (
        "tiny-llama", "auto", "austen", "random", 0.2, ["heads", "neurons"], "runs/latest")
    assert (cfg.device, cfg.prune.round_to) == ("auto", "auto")


@pytest.mark.parametrize("value", ["1", "1.5", "-0.1"])
def test_sparsity_must_be_in_0_1(methods, value):
    (problem,) = problems(f"prune.sparsity={value}")
    assert problem.startswith("prune.sparsity: must be in [0, 1)")
    assert f"got {float(value)}" in problem


def test_sparsity_zero_is_allowed(methods):
    assert problems("prune.sparsity=0") == []


def test_structures(methods):
    (problem,) = problems("prune.structures=[heads, nuerons]")
    assert problem.startswith("prune.structures[1]: unknown structure 'nuerons'. "
                              "Did you mean 'neurons'?")
    assert problems("prune.structures=[]")[0].startswith(
        "prune.structures: must name at least one of heads, kv_groups")
    assert problems("prune.structures=[ffn, ffn]") == [
        "prune.structures: listed more than once: ffn "
        "(set by override 'prune.structures=[ffn, ffn]')"]
    assert problems(f"prune.structures=[{', '.join(STRUCTURES)}]") == []


def test_other_numeric_checks(methods):
    found = problems("prune.round_to=0", "data.num_samples=0", "data.seq_len=-4",
                     "model.num_labels=0", "prune.layer_range=[4, 2]")
    assert found == [
        "model.num_labels: must be a positive integer, got 0 (set by override "
        "'model.num_labels=0')",
        "data.num_samples: must be a positive integer, got 0 (set by override "
        "'data.num_samples=0')",
        "data.seq_len: must be a positive integer, got -4 (set by override 'data.seq_len=-4')",
        "prune.layer_range: must be [start, end) with 0 <= start < end, got [4, 2] "
        "(set by override 'prune.layer_range=[4, 2]')",
        "prune.round_to: must be auto or an integer >= 1, got 0 (set by override "
        "'prune.round_to=0')",
    ]
    assert problems("prune.layer_range=[0, 3]", "prune.round_to=8") == []
    assert problems("prune.round_to=auto") == []
    (problem,) = problems("prune.round_to=fast")
    assert problem.startswith("prune.round_to: ")


def test_dtype_is_a_closed_choice(methods):
    (problem,) = problems("model.dtype=fp16")
    assert "expected one of 'auto', 'float32', 'bfloat16', 'float16'" in problem
    assert problems("model.dtype=bfloat16", "model.task=classification") == []


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_device_names_are_accepted(methods, device):
    assert problems(f"device={device}") == []


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda1", "tpu"])
def test_device_names_are_checked(methods, device):
    (problem,) = problems(f"device={device}")
    assert problem.startswith("device: must be one of auto, cpu, cuda, cuda:N, mps, cuda:0,1 "
                              f"(with placement spread), got '{device}'")


def test_method_is_checked_against_the_registry(methods):
    (problem,) = problems("prune.method=magnitdue")
    assert problem.startswith("prune.method: unknown method 'magnitdue'. "
                              "Did you mean 'magnitude'? Valid methods: magnitude, random.")
    assert problems("prune.method=magnitude") == []


def test_method_is_not_checked_while_no_method_is_registered(monkeypatch):
    empty = Registry("method")
    monkeypatch.setattr(registry, "load_builtin_methods", lambda: empty)
    assert problems("prune.method=anything") == []


def test_sections_check_themselves_when_built_in_python(methods):
    with pytest.raises(ConfigError, match=r"sparsity: must be in \[0, 1\)"):
        PruneConfig(sparsity=1.0)
    with pytest.raises(ConfigError):
        dataclasses.replace(RunConfig().prune, round_to=0)


def test_every_field_has_help():
    cfg = RunConfig()
    sections = [getattr(cfg, f.name) for f in dataclasses.fields(cfg)
                if dataclasses.is_dataclass(getattr(cfg, f.name))]
    assert len(sections) >= 4
    for obj in [cfg, *sections]:
        for f in dataclasses.fields(obj):
            assert f.metadata.get("help"), f"{type(obj).__name__}.{f.name} has no help"


def test_all_problems_from_file_and_overrides_together(methods, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  nmae: x\nprune:\n  sparsity: 2\n  structures: [heds]\n"
                    "data:\n  num_samples: ten\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), ["prune.method=randm", "output.overwrite=maybe"])
    msg = str(info.value)
    assert msg.startswith(f"6 problem(s) in config {path}:")
    for fragment in ["model.nmae: unknown key. Did you mean 'name'?",
                     "data.num_samples: expected integer, got string 'ten'",
                     "output.overwrite: expected true or false",
                     "prune.sparsity: must be in [0, 1)",
                     "prune.structures[0]: unknown structure 'heds'",
                     "prune.method: unknown method 'randm'. Did you mean 'random'?"]:
        assert fragment in msg, fragment
    assert validate_file(str(path)) and len(validate_file(str(path))) == 4


def test_round_trip_through_yaml(methods, tmp_path):
    cfg = load_config(None, ["model.task=null", "prune.layer_range=[1, 3]", "seed=3",
                             "prune.method=magnitude", "output.overwrite=true",
                             "model.name=some/hub-id"])
    assert load_config(str(dump_yaml(cfg, tmp_path / "r.yaml")), []) == cfg
    assert load_config(str(dump_yaml(cfg, tmp_path / "c.yaml", comments=True)), []) == cfg


# -------------------------------------------------------------------------- shipped configs

SHIPPED = shipped_configs()


def test_demo_is_shipped():
    cfg = load_config("demo", [])
    assert (cfg.model.name, cfg.prune.method, cfg.prune.sparsity) == ("tiny-llama", "random",
                                                                      0.3)
    assert len(SHIPPED) >= 2


@pytest.mark.parametrize("shipped", SHIPPED, ids=[c.name for c in SHIPPED])
def test_every_shipped_config_is_valid_and_described(shipped):
    # the real registry: a shipped config must name a method that exists
    assert validate_file(str(shipped.path)) == []
    assert shipped.description, f"{shipped.path} needs a '# description' first line"
    assert load_config(shipped.name, []) == load_config(str(shipped.path), [])


def test_resolve_config(tmp_path, monkeypatch):
    assert resolve_config("demo") == resolve_config("demo.yaml") == SHIPPED[0].path.parent / \
        "demo.yaml"
    local = tmp_path / "demo"
    local.write_text("seed: 1\n")
    monkeypatch.chdir(tmp_path)
    assert resolve_config("demo") == local.relative_to(tmp_path)  # a file wins over a name
    with pytest.raises(UnknownNameError, match="unknown config 'dmeo'. Did you mean 'demo'?"):
        resolve_config("dmeo")
    with pytest.raises(LmpruneError, match="config file not found: nope/x.yaml"):
        resolve_config("nope/x.yaml")
    assert validate_file("nope/x.yaml") == [
        "config file not found: nope/x.yaml. Pass an existing YAML file or the name of a "
        f"shipped config ({', '.join(c.name for c in SHIPPED)})."]
