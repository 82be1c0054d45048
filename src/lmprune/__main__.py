"""``python -m lmprune`` = the ``lmprune`` command."""
import sys

from lmprune.cli.main import main

sys.exit(main())
