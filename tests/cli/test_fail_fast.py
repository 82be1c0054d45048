"""Bad input a new user hits: a one-line `error: ...` naming the fix, exit code 2, before any
model is loaded, and nothing left behind (no output directory, no staging folder)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import lmprune
import lmprune.structures.export as export
import lmprune.zoo
from lmprune.cli.main import main
from lmprune.errors import LmpruneError
from lmprune.outputs import make_stage

FAST_PRUNE = ["eval.max_windows=1", "eval.limit=2", "eval.batch_sizes=[1]", "eval.new_tokens=2",
              "eval.prompt_len=4", "data.num_samples=1", "data.seq_len=16"]


LOADED = "A MODEL WAS LOADED"


def _no_load(*args, **kwargs):
    raise LmpruneError(LOADED)


@pytest.fixture
def no_model_load(monkeypatch):
    """Every way a command loads a model raises: the error must come before."""
    for target in (lmprune.zoo, export):
        name = "load_model" if target is lmprune.zoo else "load_pretrained"
        monkeypatch.setattr(target, name, _no_load)
    monkeypatch.setattr(lmprune, "load_pretrained", _no_load)


@pytest.fixture(autouse=True)
def small_lm_eval_index(monkeypatch):
    """lm-eval's task index stands in small: building the real one takes 20-45 s."""
    from lmprune.evaluation import zeroshot

    monkeypatch.setattr(zeroshot, "lm_eval_task_names", lambda: frozenset({"arc_easy", "mmlu"}))


@pytest.fixture
def work(tmp_path, monkeypatch):
    """An empty working directory; what a failed command must leave it as."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a directory")
    return tmp_path


@pytest.fixture
def read_only(tmp_path):
    """A directory nobody may create files in (root ignores modes: then /sys, if it refuses)."""
    if os.geteuid() != 0:
        path = tmp_path / "ro"
        path.mkdir()
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    try:
        tempfile.NamedTemporaryFile(dir="/sys/kernel").close()
    except OSError:
        yield Path("/sys/kernel")
        return
    pytest.skip("no read-only directory available to root here")


def _fails(capsys, argv: list[str], *fragments: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and LOADED not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def _left(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("argv, fragments", [
    (["prune", "--model", "tiny-llama", "--out", "p", "data.seq_len=100000"],
     ["data.seq_len", "use at most 128", "tiny-llama has 128 positions"]),
    (["prune", "--model", "tiny-llama", "--out", "p", "eval.seq_len=4096"],
     ["eval.seq_len", "use at most 128"]),
    (["prune", "--model", "tiny-lama", "--out", "p"], ["Did you mean 'tiny-llama'"]),
    (["prune", "--model", "tiny-llama", "--out", "afile"], ["afile is a file", "directory path"]),
    (["prune", "--model", "tiny-llama", "--out", "p", "eval.zero_shot=[wordnet-def]"],
     ["Did you mean 'wordnet-defs'"]),
    (["train", "--method", "apt", "--model", "tiny-bert", "--reference", "/nope", "--out", "t"],
     ["train.reference='/nope'", "--reference 0.91"]),
    (["train", "--method", "aptt", "--model", "tiny-bert", "--out", "t"],
     ["unknown method 'aptt'", "Did you mean 'apt'"]),
    (["train", "--model", "tiny-bert", "--out", "afile"], ["afile is a file"]),
    (["train", "--model", "tiny-bert", "--task", "food", "--out", "t"],
     ["train.task", "Did you mean 'foods'"]),
    (["train", "--method", "cofi", "--teacher", "nope", "--model", "tiny-bert", "--out", "t"],
     ["train.teacher", "earlier run"]),
    (["eval", "--model", "tiny-llama", "--out", "."], ["is a directory", "file path"]),
    (["eval", "--model", "tiny-llama", "--out", "e.json", "--limit", "-1"],
     ["eval.limit", "positive number"]),
    (["eval", "--model", "tiny-llama", "--out", "e.json", "--tasks", "wordnet-def"],
     ["Did you mean 'wordnet-defs'"]),
    (["eval", "--model", "tiny-llama", "--out", "e.json", "--perplexity", "austin"],
     ["eval.perplexity", "Did you mean 'austen'"]),
    (["eval", "--model", "nowhere/at/all", "--out", "e.json"], ["no such directory"]),
    (["recover", "--model", "tiny-llama", "--out", "afile"], ["afile is a file"]),
    (["recover", "--model", "tiny-llama", "--data", "chat-pair", "--out", "r"],
     ["--data", "Did you mean 'chat-pairs'"]),
    (["recover", "--model", "tiny-llama", "--data", "austen", "--out", "r"],
     ["holds text data, not instructions"]),
    (["demo", "--out", "afile"], ["afile is a file"]),
    (["compare", "nowhere", "--out", "."], ["is a directory"]),
])
def test_bad_input_fails_fast_and_leaves_nothing(work, no_model_load, capsys, argv, fragments):
    _fails(capsys, argv, *fragments)
    assert _left(work) == ["afile"]


def test_empty_instruction_file(work, no_model_load, capsys):
    for content in ("", "\n  \n"):
        (work / "empty.jsonl").write_text(content)
        _fails(capsys, ["recover", "--model", "tiny-llama", "--data", "empty.jsonl", "--out",
                        "r"], "--data", "empty.jsonl is empty", "at least one row")
    assert _left(work) == ["afile", "empty.jsonl"]


@pytest.mark.parametrize("argv", [
    ["prune", "--model", "tiny-llama"], ["train", "--model", "tiny-bert"],
    ["recover", "--model", "tiny-llama"], ["demo"], ["cp", "src"],
])
def test_read_only_output_directory(work, read_only, no_model_load, capsys, argv):
    (work / "src").mkdir()
    (work / "src" / "config.json").write_text("{}")
    out = str(read_only / "run")
    _fails(capsys, [*argv, out] if argv[0] == "cp" else [*argv, "--out", out],
           "is not writable", "choose a directory you can write to")
    assert not (read_only / "run").exists()


def test_read_only_output_file(work, read_only, no_model_load, capsys):
    _fails(capsys, ["eval", "--model", "tiny-llama", "--out", str(read_only / "e.json")],
           "is not writable")
    _fails(capsys, ["compare", "nowhere", "--out", str(read_only / "c.md")], "is not writable")


def test_validate_catches_what_the_run_would(work, capsys):
    _fails(capsys, ["validate", "demo", "model.name=tiny-lama"], "model.name",
           "Did you mean 'tiny-llama'")
    _fails(capsys, ["validate", "demo", "data.calibration=foods"], "needs a text dataset")
    code = main(["validate", "demo", "model.name=tiny-lama", "train.task=food",
                 "recovery.data=missing.jsonl"])
    err = capsys.readouterr().err
    assert code == 2 and "3 problem(s)" in err
    assert "model.name" in err and "train.task" in err and "recovery.data" in err
    assert main(["validate", "-q", "demo", "model.name=org/some-model"]) == 0  # a hub id
    assert main(["validate", "-q", "demo", f"model.name={work}"]) == 2  # a directory, no config
    assert "no config.json" in capsys.readouterr().err


def test_validate_help_names_real_commands(capsys):
    assert main(["validate", "--help"]) == 0
    text = capsys.readouterr().out
    assert "lmprune run" not in text and "`lmprune prune`" in text


# ------------------------------------------------------------------ killed runs' staging folders

KILLABLE = """
import sys, time
from pathlib import Path
from lmprune.outputs import make_stage
stage = make_stage(Path(sys.argv[1]))
(stage / "half-written.bin").write_bytes(b"x" * 1000)
print(stage, flush=True)
time.sleep(600)
"""


def _killed_stage(out: Path) -> Path:
    """A staging folder of ``out`` whose process was killed with SIGKILL."""
    env = {**os.environ, "PYTHONPATH": str(Path(lmprune.__file__).parents[1])}
    process = subprocess.Popen([sys.executable, "-c", KILLABLE, str(out)], env=env,
                               stdout=subprocess.PIPE, text=True)
    stage = Path(process.stdout.readline().strip())
    process.kill()
    process.wait()
    process.stdout.close()
    assert stage.is_dir() and stage.name.startswith(f".{out.name}.staging-")
    return stage


@pytest.mark.parametrize("argv", [
    ["prune", "--model", "tiny-lama"],
    ["train", "--model", "tiny-bert", "--reference", "/nope"],
    ["recover", "--model", "tiny-llama", "--data", "nope"],
])
def test_later_runs_remove_staging_of_killed_runs(work, no_model_load, capsys, argv):
    out = work / "run"
    dead = _killed_stage(out)
    alive = make_stage(out)  # this process is alive: its stage stays
    reused = out.parent / f".{out.name}.staging-{alive.name.split('-')[1]}-{os.getpid()}-1-abc"
    reused.mkdir()  # our pid, but another start time: the pid was reused, the owner is gone
    assert main([*argv, "--out", str(out)]) == 2
    printed = capsys.readouterr().out
    assert "removed 2 staging folder(s) left by a run that was killed" in printed
    assert not dead.exists() and not reused.exists() and alive.is_dir()
    alive.rmdir()


def test_resume_of_an_empty_folder_says_it_starts_fresh(work, no_model_load, capsys):
    (work / "r").mkdir()
    assert main(["recover", "--model", "tiny-llama", "--out", "r", "--resume"]) == 2
    out, err = capsys.readouterr()
    assert LOADED in err  # stopped at the model load, after the checks
    assert "--resume: no checkpoint in r/checkpoints, starting from scratch" in out
