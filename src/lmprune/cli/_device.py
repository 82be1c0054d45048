"""The ``--device`` option every command that runs a model takes (resolved by lmprune.device)."""
from __future__ import annotations

import argparse

from lmprune.device import DEVICE_CHOICES
from lmprune.placement import PLACEMENTS


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", metavar="DEVICE",
                        help=f"where the model runs: {DEVICE_CHOICES} (default: the config's "
                             f"`device`, auto = the GPU when there is one)")


def add_placement_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--placement", choices=PLACEMENTS,
                        help="single: the model on one device (default); spread: its layers "
                             "spread over several GPUs (--device auto/cuda: every visible GPU, "
                             "or cuda:0,1), for models larger than one GPU")


def device_overrides(args: argparse.Namespace) -> list[str]:
    """``["device=...", "placement=..."]`` for the options given (before explicit overrides,
    which win)."""
    return [f"{name}={getattr(args, name)}" for name in ("device", "placement")
            if getattr(args, name, None)]
