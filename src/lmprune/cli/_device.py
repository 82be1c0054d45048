"""The ``--device`` option every command that runs a model takes (resolved by lmprune.device)."""
from __future__ import annotations

import argparse

from lmprune.device import DEVICE_CHOICES


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", metavar="DEVICE",
                        help=f"where the model runs: {DEVICE_CHOICES} (default: the config's "
                             f"`device`, auto = the GPU when there is one)")


def device_overrides(args: argparse.Namespace) -> list[str]:
    """``["device=..."]`` when ``--device`` was given (before explicit overrides, which win)."""
    device = getattr(args, "device", None)
    return [f"device={device}"] if device else []
