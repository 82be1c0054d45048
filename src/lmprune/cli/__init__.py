"""The ``lmprune`` command line (entry point: :func:`lmprune.cli.main.main`).

One module per subcommand: ``cli/<name>.py`` *is* ``lmprune <name>``. Each module

* starts with a docstring whose first line is the command's one-line help (read without
  importing the module, so ``lmprune --help`` never pays for torch);
* defines ``add_parser(subparsers)``, adding a parser named ``<name>`` with a description and
  an ``examples:`` epilog (``_common.add_command`` does both);
* defines ``run(args) -> int`` returning the exit code. User errors are raised as
  :class:`~lmprune.errors.LmpruneError` (printed as ``error: ...``, exit code 2).

Modules whose name starts with ``_`` are helpers, not commands.
"""
