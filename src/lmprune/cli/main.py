"""The ``lmprune`` command: dispatches to one module per subcommand in ``lmprune/cli/``.

Subcommands are discovered by file name (``cli/ls.py`` is ``lmprune ls``); their one-line help
comes from the module docstring, read without importing the module. Only the module of the
command actually run is imported, so ``lmprune --help`` stays instant, and a missing or broken
subcommand (say, one that needs a package not installed) breaks only itself.

Exit codes: 0 success; 2 usage or user error (``LmpruneError``: printed as ``error: ...``
without a traceback unless ``--debug``); 1 internal error (a bug: traceback printed);
130 interrupted.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from lmprune import __version__
from lmprune.cli._quiet import library_output
from lmprune.errors import LmpruneError, UnknownNameError

CLI_DIR = Path(__file__).resolve().parent
NOT_COMMANDS = {"main"}  # modules in cli/ that are not subcommands (besides _private ones)
GLOBAL_FLAGS = ("--debug", "--verbose")  # accepted anywhere before `--`
# Listing order in --help: the workflow first, then anything else alphabetically.
ORDER = ("run", "prune", "recover", "train", "eval", "compare", "ablate", "bench", "demo", "ls",
         "cp", "validate")

DESCRIPTION = "Structured pruning of Hugging Face language models, with honest measurements."
EXAMPLES = """\
examples:
  lmprune ls                                  models, datasets, methods, shipped configs
  lmprune validate demo prune.sparsity=0.5    check a config with an override
  lmprune <command> --help                    options and examples of one command
  lmprune --debug <command> ...               full traceback on errors
  lmprune --verbose <command> ...             also the libraries' warnings and progress bars"""


def discover_commands() -> dict[str, str]:
    """``{command: one-line help}`` for every subcommand module, in listing order."""
    found = {}
    for path in CLI_DIR.glob("*.py"):
        name = path.stem
        if name.startswith("_") or name in NOT_COMMANDS:
            continue
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
            found[name] = doc.strip().splitlines()[0].rstrip(".") if doc.strip() else ""
        except (SyntaxError, OSError, UnicodeDecodeError) as exc:
            found[name] = f"(cannot be loaded: {type(exc).__name__})"
    rank = {n: i for i, n in enumerate(ORDER)}
    return {n: found[n] for n in sorted(found, key=lambda n: (rank.get(n, len(ORDER)), n))}


def _import_command(name: str):
    try:
        module = importlib.import_module(f"lmprune.cli.{name}")
    except LmpruneError:
        raise
    except Exception as exc:
        raise LmpruneError(f"the `{name}` command cannot be loaded: {type(exc).__name__}: "
                           f"{exc} (run with --debug for the traceback)") from exc
    if not (callable(getattr(module, "add_parser", None)) and callable(getattr(module, "run",
                                                                              None))):
        raise LmpruneError(f"lmprune.cli.{name} does not define add_parser() and run()")
    return module


def _selected_command(argv: Sequence[str], commands: dict[str, str]) -> str | None:
    """The subcommand named in argv (the first non-option word), checked for typos."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            if word not in commands:
                raise UnknownNameError("command", word, commands,
                                       hint="Run `lmprune --help` for what each one does.")
            return word
    return None


def build_parser(selected: str | None = None, commands: dict[str, str] | None = None):
    """The top-level parser; only ``selected``'s module is imported for its full parser.

    Returns ``(parser, module or None)``.
    """
    commands = discover_commands() if commands is None else commands
    parser = argparse.ArgumentParser(prog="lmprune", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"lmprune {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks for errors, and everything --verbose shows "
                             "(may also follow the command)")
    parser.add_argument("--verbose", action="store_true",
                        help="show the warnings, log lines and progress bars of transformers, "
                             "datasets, lm-eval and peft, hidden by default (may also follow "
                             "the command)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    module = None
    for name, help_text in commands.items():
        if name == selected:
            module = _import_command(name)
            module.add_parser(subparsers)
            if name not in subparsers.choices:
                raise LmpruneError(f"lmprune.cli.{name}.add_parser() did not add {name!r}")
        else:  # a placeholder: listed in --help, never parsed
            subparsers.add_parser(name, help=help_text, add_help=False)
    return parser, module


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    print(exc.code, file=sys.stderr)
    return 1


#: commands that load no model: no progress-bar switches (importing transformers costs ~1 s)
LIGHT_COMMANDS = ("ls", "compare")


def _global_flags(argv: list[str]) -> tuple[list[str], set[str]]:
    """``argv`` without the global flags (anywhere before ``--``), and the flags found."""
    cut = argv.index("--") if "--" in argv else len(argv)
    found = {a for a in argv[:cut] if a in GLOBAL_FLAGS}
    return [a for i, a in enumerate(argv) if i >= cut or a not in GLOBAL_FLAGS], found


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lmprune`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    argv, flags = _global_flags(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in flags
    try:
        commands = discover_commands()
        parser, module = build_parser(_selected_command(argv, commands), commands)
        args = parser.parse_args(argv)
        args.debug, args.verbose = debug, debug or "--verbose" in flags
        args.argv = [*flags, *argv]  # what re-runs this command (lmprune train --num-gpus)
        if module is None:
            parser.print_help(sys.stderr)
            return 2
        with library_output(args.verbose, progress_bars=args.command not in LIGHT_COMMANDS):
            return int(module.run(args) or 0)
    except SystemExit as exc:  # argparse (--help, --version, usage errors) or a command
        return _exit_code(exc)
    except LmpruneError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lmprune ls | head`: the reader left; say nothing
        try:  # keep the interpreter's final flush from raising again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 1
    except Exception:  # a bug in lmprune (or a library): the traceback is what matters
        traceback.print_exc()
        print("error: internal error (the traceback above says where); please report it",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
