"""Third-party noise stays out of CLI output; --verbose lets it through."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import lmprune
from lmprune.cli._quiet import LIBRARIES, library_output
from lmprune.structures.export import save_pretrained
from lmprune.zoo import build_tiny, build_tiny_tokenizer

NOISE = ("`pretrained` model kwarg is not of type `str`",  # lm-eval, HFLM on a model object
         "Generating test split",  # datasets, building lm-eval's offline task
         "Loading weights")  # transformers' progress bar while loading a checkpoint


def _warn_from(module: str, category: type[Warning]) -> None:
    warnings.warn_explicit(f"noise from {module}", category, "lib.py", 1, module=module)


@pytest.mark.parametrize("module, category", [
    ("transformers.modeling_utils", FutureWarning), ("peft.peft_model", DeprecationWarning),
    ("datasets.load", UserWarning), ("torch.nn.modules", FutureWarning)])
def test_library_warnings_are_hidden_unless_verbose(module, category):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with library_output(verbose=False, progress_bars=False):
            _warn_from(module, category)
            _warn_from("lmprune.scorers", FutureWarning)  # ours always show
        with library_output(verbose=True, progress_bars=False):
            _warn_from(module, category)
    assert [str(w.message) for w in seen] == ["noise from lmprune.scorers", f"noise from {module}"]


def test_library_loggers_pass_only_errors_and_are_restored():
    import datasets  # noqa: F401  (importing a library sets its logger's level)
    import transformers  # noqa: F401

    before = {name: logging.getLogger(name).level for name in LIBRARIES}
    with library_output(verbose=False):
        assert all(logging.getLogger(n).getEffectiveLevel() == logging.ERROR for n in LIBRARIES)
        assert not logging.getLogger("lm_eval.models.huggingface").isEnabledFor(logging.WARNING)
        assert logging.getLogger("lmprune").getEffectiveLevel() <= logging.WARNING
    assert {name: logging.getLogger(name).level for name in LIBRARIES} == before


def test_progress_bars_are_off_and_restored():
    from datasets.utils import are_progress_bars_disabled
    from transformers.utils.logging import is_progress_bar_enabled

    before = (is_progress_bar_enabled(), are_progress_bars_disabled())
    with library_output(verbose=False):
        assert not is_progress_bar_enabled() and are_progress_bars_disabled()
    assert (is_progress_bar_enabled(), are_progress_bars_disabled()) == before


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("quiet") / "model"
    save_pretrained(build_tiny("tiny-llama"), path, tokenizer=build_tiny_tokenizer("tiny-llama"))
    return path


TWO_RUNS = """
import sys
from lmprune.cli.main import main
argv = sys.argv[1:]
assert main(argv) == 0
print("=== VERBOSE ===", file=sys.stderr, flush=True)
assert main(["--verbose", *argv]) == 0
"""


def test_a_real_command_prints_no_library_noise_unless_verbose(saved_model, tmp_path):
    """One process (imports are the slow part) runs `eval` quietly, then with --verbose."""
    env = {k: v for k, v in os.environ.items()
           if not k.endswith(("PROGRESS_BARS", "VERBOSITY", "LOG_LEVEL"))}
    env["PYTHONPATH"] = str(Path(lmprune.__file__).parents[1])
    argv = ["eval", "--model", str(saved_model), "--tasks", "wordnet-defs", "--limit", "2",
            "--perplexity", "", "--no-speed", "--out", str(tmp_path / "eval.json")]
    done = subprocess.run([sys.executable, "-c", TWO_RUNS, *argv], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    quiet, verbose = done.stderr.split("=== VERBOSE ===")
    assert not [n for n in NOISE if n in quiet], quiet
    assert [n for n in NOISE if n in verbose] == list(NOISE), verbose
    assert done.stdout.count("wordnet-defs.acc ") == 2  # both runs printed their table
