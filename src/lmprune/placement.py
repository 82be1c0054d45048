"""Where a model's weights live: on one device, or its layers spread over several GPUs.

``placement: single`` (default) puts the whole model on ``device`` (:mod:`lmprune.device`).
``placement: spread`` is for models that do not fit one GPU with what a command adds to
them (gradients for Taylor importance, activations, LoRA optimizer state): the model's blocks
(decoder layers) are split into contiguous runs, one per GPU, balanced by bytes; modules
before the first block (embeddings) go with the first run, modules after the last block (final
norm, LM head) with the last, and tied weights stay together. accelerate's
``dispatch_model`` then attaches its hooks, which move each block's inputs to the block's GPU
(pipeline-style placement, one GPU computing at a time; no copy of the weights).

Every weight stays on its own GPU for the whole command, so per-weight work runs where the
weight is: Taylor importance's gradient hooks (:mod:`lmprune.scorers.grad_accumulator`) fold
each gradient into its score on that weight's GPU, and only per-group sums (a few numbers per
head or neuron) travel to the CPU, where the scores of all GPUs are accumulated. The scores
are those of the same computation on one device (tested on CPU with hooks forced, measured on
2 GPUs by ``benchmarks/multigpu``).

``device`` says which GPUs: ``auto`` or ``cuda`` = every visible GPU, ``cuda:0,1`` = those.
Without a GPU, ``device: auto`` runs on the CPU (one device; the run says so).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lmprune.device import check_gpus, gpu_list, resolve_device
from lmprune.errors import LmpruneError

PLACEMENTS = ("single", "spread")
#: share of each GPU's free memory the weights may take (the rest is for activations,
#: gradients and buffers of the command)
WEIGHT_SHARE = 0.9


@dataclass
class Placement:
    """How a command places its model: ``kind`` (single or spread) over ``devices``."""

    kind: str
    devices: list[torch.device]
    note: str = ""

    @property
    def main(self) -> torch.device:
        """Where inputs start (the first device)."""
        return self.devices[0]

    @property
    def spread(self) -> bool:
        return self.kind == "spread" and len(self.devices) > 1

    def describe(self) -> str:
        """What a command prints about where it runs."""
        from lmprune.device import describe_device

        if not self.spread:
            return describe_device(self.main) + (f" ({self.note})" if self.note else "")
        return "spread over " + ", ".join(describe_device(d) for d in self.devices)


def placement_problem(device: str, placement: str) -> str | None:
    """Why ``device`` and ``placement`` do not go together (config validation), or None."""
    if placement not in PLACEMENTS:
        return f"placement: must be one of {', '.join(PLACEMENTS)}, got {placement!r}"
    name = str(device).strip()
    several = bool(gpu_list(name))
    if placement == "single" and several:
        return (f"device: {name} names several GPUs; set placement: spread (--placement "
                f"spread) to spread the model over them, or name one GPU")
    if placement == "spread" and not several and name not in ("auto", "cuda"):
        return (f"placement: spread needs GPUs: device auto or cuda (every visible GPU) or a "
                f"list such as cuda:0,1; got device {name}")
    return None


def resolve_placement(device: str, placement: str = "single") -> Placement:
    """The devices ``device`` and ``placement`` stand for on this machine (errors when absent)."""
    problem = placement_problem(device, placement)
    if problem:
        raise LmpruneError(problem)
    if placement == "single":
        return Placement("single", [resolve_device(device)])
    indices = gpu_list(device)
    if indices is None:  # auto or cuda: every visible GPU
        if not torch.cuda.is_available():
            if device.strip() == "auto":
                return Placement("single", [resolve_device("cpu")],
                                 "placement spread: no GPU here, running on the CPU")
            check_gpus(device)
        indices = list(range(torch.cuda.device_count()))
    check_gpus(device, indices)
    if len(set(indices)) != len(indices):
        raise LmpruneError(f"device {device}: each GPU may be named once")
    devices = [torch.device("cuda", i) for i in indices]
    note = "" if len(devices) > 1 else "placement spread: one GPU visible, the model stays on it"
    return Placement("spread", devices, note)


def model_devices(model: nn.Module) -> list[torch.device]:
    """The devices holding ``model``'s weights, in order of first use."""
    seen: dict[str, torch.device] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        seen.setdefault(str(tensor.device), tensor.device)
    return list(seen.values())


def place(model: nn.Module, placement: Placement, capacity: Sequence[int] | None = None
          ) -> nn.Module:
    """Put ``model`` where ``placement`` says (moved or dispatched in place); returns it."""
    if not placement.spread:
        return model.to(placement.main)
    return spread(model, placement.devices, capacity)


def spread(model: nn.Module, devices: Sequence[torch.device],
           capacity: Sequence[int] | None = None) -> nn.Module:
    """Dispatch ``model``'s blocks over ``devices`` with accelerate (see the module docstring).

    ``capacity``: bytes of weights each device may take (default: WEIGHT_SHARE of each GPU's
    free memory; required for CPU devices, which tests use to run this code path).
    Hooks are attached even when every device is the same (the CPU in tests), so the code
    path is the one that runs on several GPUs.
    """
    from accelerate import dispatch_model

    if capacity is None:
        capacity = [_free_bytes(d) for d in devices]
    device_map = spread_map(model, devices, capacity)
    with _quiet_cpu_note():
        dispatch_model(model, {name: str(d) for name, d in device_map.items()},
                       main_device=str(devices[0]), force_hooks=True)
    return model


@contextlib.contextmanager
def _quiet_cpu_note() -> Iterator[None]:
    """accelerate says weights were "offloaded to the cpu" whenever a map names the CPU, even
    with the CPU as the execution device (nothing is offloaded then): drop that line."""
    import logging

    class Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "offloaded to the" not in record.getMessage()

    logger, drop = logging.getLogger("accelerate.big_modeling"), Drop()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
    else:  # CPU "devices" (tests run the spread code path with hooks on the CPU)
        import psutil

        free = psutil.virtual_memory().available
    return int(free * WEIGHT_SHARE)


def spread_map(model: nn.Module, devices: Sequence[torch.device],
               capacity: Sequence[int]) -> dict[str, torch.device]:
    """``{module name: device}`` covering every weight of ``model``: contiguous runs of
    blocks, each device's share of the bytes proportional to its ``capacity``."""
    if len(devices) != len(capacity) or not devices:
        raise ValueError("one capacity per device is needed")
    units = list(_units(model))
    if sum(is_block for _, _, is_block in units) < len(devices):
        raise LmpruneError(f"{type(model).__name__} has fewer blocks than devices "
                           f"({len(devices)}); it cannot be spread over them")
    sizes = [_bytes(module) for _, module, _ in units]
    total = sum(sizes)
    bounds = _cumulative([total * c / sum(capacity) for c in capacity])
    assigned, done, index = {}, 0, 0
    for (name, _module, _block), size in zip(units, sizes):
        middle = done + size / 2
        while index < len(devices) - 1 and middle > bounds[index]:
            index += 1
        assigned[name] = index
        done += size
    _keep_ties_together(model, assigned)
    _check_capacity(assigned, dict(zip((n for n, _, _ in units), sizes)), devices, capacity)
    return {name: devices[i] for name, i in assigned.items()}


def _cumulative(values: list[float]) -> list[float]:
    out, running = [], 0.0
    for value in values:
        running += value
        out.append(running)
    return out


def _block_classes(model: nn.Module) -> set[str]:
    """Class names of the modules that are never split (transformers' ``_no_split_modules``;
    else the members of the model's longest ``nn.ModuleList``)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    if names:
        return names
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise LmpruneError(f"{type(model).__name__} has no list of layers to spread over GPUs")
    return {type(m).__name__ for m in max(lists, key=len)}


def _units(model: nn.Module) -> Iterator[tuple[str, nn.Module, bool]]:
    """(name, module, is_block) for each block and each largest submodule holding no block,
    in module order: the entries of the device map."""
    blocks = _block_classes(model)

    def holds_block(module: nn.Module) -> bool:
        return any(type(m).__name__ in blocks for m in module.modules())

    def walk(prefix: str, module: nn.Module) -> Iterator[tuple[str, nn.Module, bool]]:
        if type(module).__name__ in blocks or not holds_block(module):
            yield prefix, module, type(module).__name__ in blocks
            return
        direct = [n for n, _ in module.named_parameters(recurse=False)]
        direct += [n for n, b in module.named_buffers(recurse=False) if b is not None]
        if direct:
            raise LmpruneError(f"{type(model).__name__}.{prefix or '(root)'} holds weights "
                               f"({', '.join(direct)}) beside its layers; it cannot be spread")
        for name, child in module.named_children():
            yield from walk(f"{prefix}.{name}" if prefix else name, child)

    yield from walk("", model)


def _bytes(module: nn.Module) -> int:
    tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}.values()
    return sum(t.numel() * t.element_size() for t in tensors)


def _keep_ties_together(model: nn.Module, assigned: dict[str, int]) -> None:
    """Modules sharing a weight (tied embeddings and LM head) go to the first one's device."""
    from accelerate.utils import find_tied_parameters

    def owner(param_name: str) -> str | None:
        return next((n for n in assigned if param_name == n or param_name.startswith(n + ".")),
                    None)

    for group in find_tied_parameters(model):
        owners = [o for o in (owner(p) for p in group) if o is not None]
        target = min((assigned[o] for o in owners), default=0)
        for o in owners:
            assigned[o] = target


def _check_capacity(assigned: dict[str, int], sizes: dict[str, int],
                    devices: Sequence[torch.device], capacity: Sequence[int]) -> None:
    used = [0] * len(devices)
    for name, index in assigned.items():
        used[index] += sizes[name]
    over = [i for i, u in enumerate(used) if u > capacity[i]]
    if over:
        i = over[0]
        raise LmpruneError(
            f"the model's weights do not fit {len(devices)} device(s): {devices[i]} would hold "
            f"{used[i] / 2**30:.1f} GiB of {capacity[i] / 2**30:.1f} GiB available; use more "
            f"GPUs (device cuda:0,1,...) or a smaller dtype (model.dtype=bfloat16)")
