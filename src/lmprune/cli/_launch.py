"""``--num-gpus N``: run a command in N processes through ``accelerate launch``.

``lmprune train --num-gpus 2 ...`` runs ``accelerate launch --num_processes 2 --multi_gpu -m
lmprune train ...`` (the same arguments, without ``--num-gpus``): accelerate starts the
processes, one per GPU, and their gradients are averaged every step through accelerate
(lmprune.training.distributed).
With ``--device cpu`` the processes run on the CPU (gloo), which is how the tests run it
(``--multi_gpu`` is accelerate's torchrun launcher; ``--cpu`` would start one process).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys

from lmprune.errors import LmpruneError


def launched() -> bool:
    """True inside a process that accelerate (or torchrun) started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or "LOCAL_RANK" in os.environ


def without_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(argv: list[str], processes: int) -> list[str]:
    """The ``accelerate launch`` command line that runs ``lmprune <argv>`` in ``processes``."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes",
            str(processes), "--num_machines", "1", "--multi_gpu", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", str(free_port()),
            "-m", "lmprune", *without_option(argv, "--num-gpus")]


def check_processes(processes: int, device: str) -> bool:
    """Whether the CPU runs the processes; raises when the GPUs are not there."""
    import torch

    if processes < 1:
        raise LmpruneError(f"--num-gpus must be >= 1, got {processes}")
    if device.strip() == "cpu":
        return True
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < processes:
        raise LmpruneError(f"--num-gpus {processes}: this machine has {count} GPU(s); use "
                           f"--num-gpus {max(count, 1)}, or --device cpu to run the processes "
                           f"on the CPU")
    return False


def relaunch(argv: list[str], processes: int, device: str) -> int:
    """Run ``lmprune <argv>`` in ``processes`` processes; the exit code of the launch."""
    cpu = check_processes(processes, device)
    env = {**os.environ, "NCCL_NVLS_ENABLE": os.environ.get("NCCL_NVLS_ENABLE", "0")}
    if cpu:
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return subprocess.run(launch_command(argv, processes), env=env).returncode
