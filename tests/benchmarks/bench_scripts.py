"""Load a script under benchmarks/ as a module: how the benchmark tests reach them."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(relative: str):
    """``load("apt_base/live_memory.py")``: the script, run as a module; its folder goes on
    ``sys.path`` first, for the scripts beside it that it imports (``step_time``)."""
    path = BENCHMARKS / relative
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
