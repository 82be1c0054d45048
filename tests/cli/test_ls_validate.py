"""The CLI skeleton: global behaviour of `lmprune`, and the `ls` and `validate` commands."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from lmprune import __version__, registry
from lmprune.cli import ls as ls_cmd
from lmprune.cli import main as main_mod
from lmprune.cli.main import discover_commands, main
from lmprune.config import RunConfig, load_config, to_dict
from lmprune.errors import ConfigError
from lmprune.registry import Registry


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def methods(monkeypatch):
    fake = Registry("method", hint="Run `lmprune ls methods` to see them all.")
    fake.register("random", object(), help="drop units uniformly at random")
    fake.register("magnitude", object(), help="smallest weight norms first")
    monkeypatch.setattr(registry, "METHODS", fake)
    monkeypatch.setattr(registry, "load_builtin_methods", lambda: fake)
    return fake


@dataclass(frozen=True)
class FakeModel:
    name: str
    family: str
    source: str
    description: str
    default_task: str
    offline: bool = True


@pytest.fixture
def catalogs(monkeypatch):
    """Fake lmprune.zoo / lmprune.data (dataclass entries and plain-mapping entries)."""
    zoo = types.ModuleType("lmprune.zoo")
    zoo.list_models = lambda: [
        FakeModel("tiny-fake", "llama", "config:tiny", "a tiny test model", "causal-lm"),
        FakeModel("big-fake", "bert", "hub:org/big", "a larger one", "classification", False)]
    data = types.ModuleType("lmprune.data")
    data.list_datasets = lambda: [
        {"name": "prose", "kind": "lm", "description": "some text", "offline": True,
         "splits": ("train", "test"), "source": "bundled:prose"}]
    monkeypatch.setitem(sys.modules, "lmprune.zoo", zoo)
    monkeypatch.setitem(sys.modules, "lmprune.data", data)


# ------------------------------------------------------------------------------ lmprune

def test_top_level_help_lists_commands(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    assert out.startswith("usage: lmprune")
    for name in ["ls", "validate", "examples:", "--debug", "--version"]:
        assert name in out


def test_version(capsys):
    assert run_cli(capsys, "--version") == (0, f"lmprune {__version__}\n", "")


def test_no_command_prints_usage_and_fails(capsys):
    code, out, err = run_cli(capsys)
    assert code == 2 and "usage: lmprune" in err and out == ""


def test_unknown_command_suggests(capsys):
    code, out, err = run_cli(capsys, "valdate", "demo")
    assert code == 2
    assert err.startswith("error: unknown command 'valdate'. Did you mean 'validate'")
    assert err.endswith(f"? Valid commands: {', '.join(sorted(discover_commands()))}. "
                        "Run `lmprune --help` for what each one does.\n")


@pytest.mark.parametrize("command", list(discover_commands()))
def test_every_command_has_help_with_description_and_examples(capsys, command):
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0
    assert out.startswith(f"usage: lmprune {command}")
    assert "example" in out.lower()
    description = out.split("\n\n")[1]
    assert description.strip() and not description.startswith(("positional", "options"))


def test_usage_errors_exit_2(capsys):
    code, _, err = run_cli(capsys, "ls", "nothing")
    assert code == 2 and "invalid choice: 'nothing'" in err
    code, _, err = run_cli(capsys, "validate")
    assert code == 2 and "the following arguments are required: CONFIG" in err


def test_a_broken_command_breaks_only_itself(capsys, monkeypatch):
    commands = {**discover_commands(), "broken": "a command whose module fails to import"}
    monkeypatch.setattr(main_mod, "discover_commands", lambda: commands)
    monkeypatch.setitem(sys.modules, "lmprune.cli.broken", None)  # import raises
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0 and "broken" in out
    code, _, err = run_cli(capsys, "broken")
    assert code == 2 and err.startswith("error: the `broken` command cannot be loaded")
    assert "Traceback" not in err
    code, out, _ = run_cli(capsys, "ls", "configs")
    assert code == 0 and "demo" in out


def test_interrupt_and_internal_errors(capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(ls_cmd, "run", interrupted)
    assert run_cli(capsys, "ls") == (130, "", "interrupted\n")

    def buggy(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(ls_cmd, "run", buggy)
    code, _, err = run_cli(capsys, "ls")
    assert code == 1 and "Traceback" in err and "ZeroDivisionError: a bug" in err
    assert "error: internal error" in err


def test_the_installed_console_script(tmp_path):
    exe = Path(sys.executable).parent / "lmprune"
    if not exe.exists():
        exe = shutil.which("lmprune")
    if exe is None:
        pytest.skip("the lmprune console script is not installed")
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, cwd=tmp_path,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: lmprune") and "validate" in result.stdout
    result = subprocess.run([str(exe), "validate", "dmeo"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and "Did you mean 'demo'?" in result.stderr
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------------- ls

def test_ls_prints_all_four_sections(capsys, catalogs, methods):
    code, out, err = run_cli(capsys, "ls")
    assert code == 0 and err == ""
    lines = out.splitlines()
    for header in ["models:", "datasets:", "methods:", "configs:"]:
        assert header in lines
    assert "  NAME       FAMILY  TASK            OFFLINE  SOURCE       DESCRIPTION" in lines
    assert "  tiny-fake  llama   causal-lm       yes      config:tiny  a tiny test model" in lines
    assert "  big-fake   bert    classification  no       hub:org/big  a larger one" in lines
    assert "  prose  lm    train,test  yes      bundled:prose  some text" in lines
    assert "  magnitude  smallest weight norms first" in lines
    assert any(line.startswith("  demo ") for line in lines)


def test_ls_one_section(capsys, catalogs, methods):
    code, out, _ = run_cli(capsys, "ls", "methods")
    assert code == 0
    assert out.splitlines() == ["NAME       DESCRIPTION",
                                "magnitude  smallest weight norms first",
                                "random     drop units uniformly at random"]


def test_ls_json(capsys, catalogs, methods):
    code, out, _ = run_cli(capsys, "ls", "--json")
    assert code == 0
    data = json.loads(out)
    assert list(data) == ["models", "datasets", "methods", "configs"]
    assert data["models"][1] == {"name": "big-fake", "family": "bert", "source": "hub:org/big",
                                 "description": "a larger one",
                                 "default_task": "classification", "offline": False}
    assert data["datasets"][0]["splits"] == ["train", "test"]
    assert {"name": "random", "description": "drop units uniformly at random"} in data["methods"]
    demo = next(c for c in data["configs"] if c["name"] == "demo")
    assert demo["description"] and Path(demo["path"]).is_file()
    code, out, _ = run_cli(capsys, "ls", "configs", "--json")
    assert list(json.loads(out)) == ["configs"]


def test_ls_when_a_catalog_module_is_missing(capsys, monkeypatch, methods):
    monkeypatch.setitem(sys.modules, "lmprune.zoo", None)  # as if not installed
    code, out, _ = run_cli(capsys, "ls")
    assert code == 0 and "models:\n  (lmprune.zoo is not available in this build)" in out
    code, _, err = run_cli(capsys, "ls", "models")
    assert code == 2 and err.startswith("error: cannot list models")


def test_ls_real_catalogs_when_present(capsys):
    """With the real zoo and data modules (skipped until they exist)."""
    code, out, _ = run_cli(capsys, "ls", "--json")
    data = json.loads(out)
    if not data["models"] or not data["datasets"]:
        pytest.skip("lmprune.zoo / lmprune.data not available yet")
    assert code == 0
    assert "tiny-llama" in {m["name"] for m in data["models"]}
    assert "austen" in {d["name"] for d in data["datasets"]}


# ----------------------------------------------------------------------------- validate

def test_validate_a_shipped_config(capsys, methods):
    code, out, err = run_cli(capsys, "validate", "demo", "prune.sparsity=0.5")
    assert code == 0 and err == ""
    first, _, rest = out.partition("\n")
    assert first.startswith("ok: demo")
    resolved = yaml.safe_load(rest)
    expected = load_config("demo", ["prune.sparsity=0.5"])
    assert resolved == to_dict(expected) and resolved["prune"]["sparsity"] == 0.5


def test_validate_a_file_quietly_and_write_it(capsys, methods, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("prune:\n  method: magnitude\n  structures: [ffn]\n")
    out_path = tmp_path / "resolved.yaml"
    code, out, _ = run_cli(capsys, "validate", str(path), "-q", "-o", str(out_path),
                           "--comments")
    assert code == 0 and out == f"ok: {path}\n"
    assert "# " in out_path.read_text()
    assert load_config(str(out_path), []) == load_config(str(path), [])
    assert load_config(str(out_path), []).prune.structures == ["ffn"]


def test_validate_reports_every_problem_without_traceback(capsys, methods, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  dtype: fp16\nprune:\n  sparsity: 1.2\n  methd: random\n"
                    "  structures: [heads, neuron]\ndata:\n  seq_len: 0\n")
    code, out, err = run_cli(capsys, "validate", str(path), "prune.round_to=0",
                             "output.dirr=x")
    assert code == 2 and out == ""
    assert err.startswith(f"error: 7 problem(s) in config {path}:\n")
    for fragment in [
        "model.dtype: expected one of 'auto', 'float32', 'bfloat16', 'float16', got string 'fp16'",
        "prune.sparsity: must be in [0, 1)",
        "prune.methd: unknown key. Did you mean 'method'?",
        "prune.structures[1]: unknown structure 'neuron'. Did you mean 'neurons'?",
        "data.seq_len: must be a positive integer, got 0",
        "prune.round_to: must be auto or an integer >= 1, got 0 (set by override 'prune.round_to=0')",
        "output.dirr: unknown key. Did you mean 'dir'?",
    ]:
        assert fragment in err, fragment
    assert "Traceback" not in err


def test_validate_debug_shows_the_traceback(capsys, methods, tmp_path):
    code, _, err = run_cli(capsys, "--debug", "validate", "demo", "prune.sparsity=2")
    assert code == 2 and "Traceback" in err and "ConfigError" in err
    assert err.rstrip().splitlines()[-1].startswith("error: prune.sparsity: must be in [0, 1)")
    code, _, err = run_cli(capsys, "validate", "demo", "prune.sparsity=2", "--debug")
    assert code == 2 and "Traceback" in err


def test_validate_missing_or_misnamed_config(capsys, methods):
    code, _, err = run_cli(capsys, "validate", "dmeo")
    assert code == 2 and err.startswith("error: unknown config 'dmeo'. Did you mean 'demo'?")
    code, _, err = run_cli(capsys, "validate", "no/such.yaml")
    assert code == 2 and err.startswith("error: config file not found: no/such.yaml")
    code, _, err = run_cli(capsys, "validate", "prune.sparsity=0.3")
    assert code == 2 and "expected a config file or shipped config name before" in err


def test_validate_file_matches_the_python_api(methods, tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("seed: [1]\n")
    with pytest.raises(ConfigError, match="seed: expected integer, got list"):
        load_config(str(path), [])
    assert RunConfig() == load_config(None, [])
