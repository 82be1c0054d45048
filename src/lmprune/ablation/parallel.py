"""``lmprune ablate --jobs N``: the (variant, seed) pairs of an ablation in N worker processes.

Small models leave a GPU mostly idle (a MiniLM run at batch 32 uses a fraction of an H200), so
an ablation of 48 such runs finishes sooner with several runs at a time. Each worker is the
same ``lmprune ablate`` command with a hidden ``--shard I/N``: it runs only the pairs whose
place in the run order (seed by seed, variant by variant) is I modulo N, in the same output
directory; every run has its own folder, so the workers never write the same run. Each
worker's output lines are prefixed with ``[job I]``. When all have stopped, the parent reads
the finished runs and writes the one table (:mod:`lmprune.ablation.report`); a pair a worker
could not finish is reported with its recorded error, and rerunning the same command resumes.

On a CPU the workers share the cores: each gets ``cores / N`` threads unless
``OMP_NUM_THREADS`` is set. Time columns of runs that shared a device are not comparable
with runs that had it alone (the table's notes say which device each run used).
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence


def worker_command(args: Sequence[str], index: int, jobs: int) -> list[str]:
    """The command of worker ``index``: ``lmprune ablate`` with ``args`` (the parent's
    arguments without ``--jobs``, see :func:`ablate_args`) and ``--shard index/jobs``."""
    return [sys.executable, "-m", "lmprune", "ablate", *args, "--shard", f"{index}/{jobs}"]


def ablate_args(plan: str, out: str, seeds: int, base: str | None = None,
                method: str | None = None, keep_models: bool = False,
                overrides: Sequence[str] = ()) -> list[str]:
    """The arguments that make a worker run the same ablation as its parent."""
    args = [plan, "--out", out, "--seeds", str(seeds)]
    if base:
        args += ["--base", base]
    if method:
        args += ["--method", method]
    if keep_models:
        args.append("--keep-models")
    return [*args, *overrides]


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with 0 <= I < N."""
    from lmprune.errors import LmpruneError

    try:
        index, jobs = (int(part) for part in text.split("/"))
    except ValueError:
        raise LmpruneError(f"--shard expects I/N (e.g. 0/2), got {text!r}") from None
    if not 0 <= index < jobs:
        raise LmpruneError(f"--shard {text}: I must be in 0..N-1")
    return index, jobs


def worker_env(jobs: int) -> dict[str, str]:
    """The workers' environment: the cores split between them when no thread count is set."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


def run_workers(args: Sequence[str], jobs: int, echo: Callable[[str], None] = print) -> list[int]:
    """Start ``jobs`` workers, relay their lines (prefixed ``[job I]``), wait for all; their
    exit codes. Interrupted (Ctrl-C), the workers are stopped before the interrupt goes on."""
    env = worker_env(jobs)
    procs = [subprocess.Popen(worker_command(args, i, jobs), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
             for i in range(jobs)]
    lock = threading.Lock()

    def relay(i: int, proc: subprocess.Popen) -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            with lock:
                echo(f"[job {i}] {line.rstrip()}")

    threads = [threading.Thread(target=relay, args=(i, p), daemon=True)
               for i, p in enumerate(procs)]
    for t in threads:
        t.start()
    try:
        codes = [p.wait() for p in procs]
    except BaseException:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        raise
    for t in threads:
        t.join()
    return codes
