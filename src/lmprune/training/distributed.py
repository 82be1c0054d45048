"""Data-parallel ``lmprune train`` on accelerate.

``accelerate launch --num_processes N -m lmprune train ...`` (or ``lmprune train --num-gpus N``,
which runs exactly that) starts N processes. Each one holds the whole model; every optimizer
step draws the same *global* batch (``train.batch_size`` examples, the seeded order of a
single-process run), collates it once (so padding is the same) and runs its share of the rows:
contiguous slices of ``ceil(B / N)`` rows, the loss of a slice weighted by
``rows * N / B`` so that the average of the processes' gradients is the gradient of the mean
loss over the global batch, exactly as in one process.

What keeps N processes in the state one process would be in (:func:`lmprune.training.loop.run_loop`):

* **gradients**: after backward the gradients of every trained tensor (the model's, and the
  tensors a method trains or reads outside it, such as APT's masks) are all-reduced
  through accelerate and averaged (:meth:`DataParallel.average_grads`). Not a DDP wrapper:
  APT compacts the model and grows adapter ranks mid-run, and an all-reduce after backward
  needs no re-wrapping; every process applies the same compaction to the same numbers;
* **decisions**: taken from the averaged gradients and identical weights, hence the same on
  every process; APT's outlier-aware salience sums its per-batch factors over the processes
  first (:meth:`DataParallel.sum`); Kwon's mask search and mask tuning run whole on every
  process (same calibration batches, same weights, same masks); CoFi's gates and multipliers
  are optimizer parameter groups, averaged like the rest; ``DATA_PARALLEL`` in
  :mod:`lmprune.recipes.train` lists the methods (a new one is refused until added there);
* **outputs**: only process 0 writes (checkpoints, the final model, metrics, the report);
  checkpoints hold the plain model and optimizer, so they resume on any number of processes.

With one process every operation here is a no-op.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch


class DataParallel:
    """The processes of one run (one process: everything is a no-op)."""

    def __init__(self, accelerator=None) -> None:
        self.accelerator = accelerator
        self.world = accelerator.num_processes if accelerator is not None else 1
        self.rank = accelerator.process_index if accelerator is not None else 0
        self.idle = False  # this process ran no row of the current batch (shard)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- the global batch ---------------------------------------------------------------
    def rows(self, n: int) -> range:
        """This process's rows of a global batch of ``n`` rows (contiguous slices)."""
        per = math.ceil(n / self.world)
        return range(min(n, self.rank * per), min(n, (self.rank + 1) * per))

    def shard(self, batch: Mapping[str, torch.Tensor]) -> tuple[dict, float]:
        """(this process's rows of the collated global ``batch``, the weight of their mean
        loss). A process left without rows (a last batch smaller than N) runs the first row
        with weight 0, so that it still joins the gradient synchronization."""
        n = len(next(iter(batch.values())))
        if not self.active:
            return dict(batch), 1.0
        rows = self.rows(n)
        self.idle = len(rows) == 0  # what this process measures of the batch must not count
        if self.idle:
            return {k: v[:1] for k, v in batch.items()}, 0.0
        return ({k: v[rows.start:rows.stop] for k, v in batch.items()},
                len(rows) * self.world / n)

    # --- gradients and numbers -------------------------------------------------------
    def average_grads(self, params: Iterable[torch.Tensor]) -> None:
        """Average the gradients of ``params`` over the processes (one all-reduce per dtype)."""
        if not self.active:
            return
        tensors = [p.grad for p in params if p.grad is not None]
        for tensor, total in zip(tensors, self._all_reduce(tensors)):
            tensor.copy_(total / self.world)

    def mean(self, value: float | torch.Tensor) -> float:
        """The mean of a number over the processes."""
        if not self.active:
            return float(value)
        tensor = torch.as_tensor(value, dtype=torch.float64, device=self.accelerator.device)
        return float(self._all_reduce([tensor])[0]) / self.world

    def sum(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """The sums of ``tensors`` over the processes (one all-reduce per dtype and device),
        e.g. the factors of APT's outlier-aware salience (lmprune.scorers.apt_salience)."""
        return self._all_reduce(tensors) if self.active else list(tensors)

    def barrier(self) -> None:
        if self.active:
            self.accelerator.wait_for_everyone()

    def _all_reduce(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Sums over the processes, flattened into one buffer per (dtype, device)."""
        from accelerate.utils import reduce

        out: list[torch.Tensor | None] = [None] * len(tensors)
        groups: dict[tuple, list[int]] = {}
        for i, t in enumerate(tensors):
            groups.setdefault((t.dtype, t.device), []).append(i)
        for members in groups.values():
            flat = reduce(torch.cat([tensors[i].detach().reshape(-1) for i in members]),
                          reduction="sum")
            offset = 0
            for i in members:
                n = tensors[i].numel()
                out[i] = flat[offset:offset + n].view_as(tensors[i])
                offset += n
        return out  # type: ignore[return-value]
