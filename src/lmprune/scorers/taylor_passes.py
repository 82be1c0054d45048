"""The backward passes behind Taylor importance, planned to bound memory.

What each criterion needs from the gradients (``G`` = gradient of the mean loss over the N
calibration samples, ``H`` = (1/N) Σ_s g_s², the squared per-sample gradients):

=============  ============================  =========================================
criterion      needs                         without a per-element buffer when
=============  ============================  =========================================
vector         Σ G·W per index (linear)      always: per-index sums add up over passes
element1       |G·W| per element             G comes from one backward over all samples
element2       |G·W − ½W·H·W| per element    never: H must be kept until G is known
param_second   Σ W·H·W per index (linear)    always: each per-sample pass adds its part
=============  ============================  =========================================

So the only per-element buffers are H (``element2``) and, when the samples are split into
micro-batches (``batch_size < N``), ΣG for ``element1``/``element2``. Both are fp32 (fp64 for
fp64 weights): 2x a bf16 weight. Instead of holding them for every scored weight at once,
the weights are **streamed in chunks of whole layers**: the passes run once per chunk, and
only that chunk's weights require grad (so backward stops at the chunk's lowest layer and
the forward keeps no activations below it). A chunk's buffers hold at most
``buffer_fraction`` of the bytes of the scored weights themselves (a chunk is at least one
layer); with micro-batches also at most the activation memory that micro-batching saves,
by :func:`lmprune.scorers.taylor_memory.activation_savings` (a lower bound). When even one
layer's buffer would exceed that saving, the passes run on the whole batch instead (with a
warning): micro-batching never raises the peak.

Cost: per chunk, N per-sample passes (element2, param_second) plus ceil(N / batch_size)
gradient passes (none for param_second alone). One chunk, one batch is LLM-Pruner's own
schedule.
"""
from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from lmprune.scorers.coupling import CoupledTensor
from lmprune.scorers.grad_accumulator import FloatSums, LossFn, backward_passes, watch_gradients

#: criteria that need G element by element before |·| (not linear in G)
ELEMENTWISE_G = ("element1", "element2")
#: criteria that need H
NEEDS_H = ("element2", "param_second")
#: criteria computed from G
NEEDS_G = ("vector", "element1", "element2")

_LAYER = re.compile(r"^(.*?\.\d+)\.")


@dataclass
class PassPlan:
    """Which passes run, over which chunks of the scored tensors."""

    chunks: list[list[int]]  # indices into the coupled tensors, one list per chunk
    per_sample: bool  # N one-sample passes per chunk (H)
    hessian_buffer: bool  # H kept per element (element2)
    batch: int | None  # samples per gradient pass; None: no gradient pass
    buffered_g: bool  # ΣG kept per element over micro-batches
    buffer_bytes: int  # the largest chunk's per-element buffers
    notes: list[str] = field(default_factory=list)

    def passes(self, n: int) -> int:
        """Backward passes over all chunks."""
        per_chunk = (n if self.per_sample else 0) + (math.ceil(n / self.batch) if self.batch else 0)
        return per_chunk * len(self.chunks)

    def gradients(self, n: int) -> int:
        """Gradients handed to the scorer over all passes (what the progress bar counts)."""
        per_pass = (n if self.per_sample else 0) + (math.ceil(n / self.batch) if self.batch else 0)
        return sum(len(chunk) * per_pass for chunk in self.chunks)


def layer_key(name: str) -> str:
    """The layer a parameter belongs to (``model.layers.3``), or its own name outside layers."""
    match = _LAYER.match(name)
    return match.group(1) if match else name


def element_bytes(param: torch.Tensor) -> int:
    """Bytes per element of an fp32 (fp64 for fp64 weights) buffer for ``param``."""
    return torch.finfo(torch.promote_types(param.dtype, torch.float32)).bits // 8


def chunk_by_layer(tensors: Sequence[CoupledTensor], per_tensor: Sequence[int],
                   budget: float) -> list[list[int]]:
    """Consecutive whole layers (in parameter order) whose buffers fit in ``budget`` bytes
    together; a layer that alone exceeds it is a chunk of its own."""
    layers: dict[str, list[int]] = {}
    for index, tensor in enumerate(tensors):
        layers.setdefault(layer_key(tensor.name), []).append(index)
    chunks, current, used = [], [], 0
    for members in layers.values():
        size = sum(per_tensor[i] for i in members)
        if current and used + size > budget:
            chunks.append(current)
            current, used = [], 0
        current += members
        used += size
    if current:
        chunks.append(current)
    return chunks


def plan_passes(tensors: Sequence[CoupledTensor], metrics: Sequence[str], n: int,
                batch_size: int | None, buffer_fraction: float,
                activation_saving: Callable[[int], float] | None = None) -> PassPlan:
    """The pass schedule for ``metrics`` over ``n`` samples (see the module docstring).

    ``activation_saving(batch)`` is a lower bound on the activation bytes that running
    ``batch`` samples per pass saves over all ``n`` at once.
    """
    per_sample = any(m in NEEDS_H for m in metrics)
    hessian_buffer = "element2" in metrics
    batch = min(batch_size or n, n) if any(m in NEEDS_G for m in metrics) else None
    notes = []
    buffered_g = batch is not None and batch < n and any(m in ELEMENTWISE_G for m in metrics)
    sizes = [t.param.numel() * element_bytes(t.param) for t in tensors]
    weights = sum(t.param.numel() * t.param.element_size() for t in tensors)
    budget = buffer_fraction * weights
    if buffered_g:
        saving = activation_saving(batch) if activation_saving is not None else math.inf
        per_layer = max(_layer_sizes(tensors, sizes, 1 + hessian_buffer))
        if per_layer > saving:
            notes.append(f"micro-batches of {batch} would need a {per_layer / 2**20:.0f} MiB "
                         f"gradient buffer per layer, more than the ~{saving / 2**20:.0f} MiB of "
                         f"activations they save; running all {n} samples in one pass instead")
            warnings.warn("taylor: " + notes[-1], stacklevel=3)
            batch, buffered_g = n, False
        else:
            budget = min(budget, saving)
    copies = int(hessian_buffer) + int(buffered_g)
    if copies == 0:
        return PassPlan([list(range(len(tensors)))], per_sample, False, batch, False, 0, notes)
    per_tensor = [copies * s for s in sizes]
    chunks = chunk_by_layer(tensors, per_tensor, budget)
    largest = max(sum(per_tensor[i] for i in chunk) for chunk in chunks)
    return PassPlan(chunks, per_sample, hessian_buffer, batch, buffered_g, largest, notes)


def _layer_sizes(tensors, sizes, copies) -> list[int]:
    layers: dict[str, int] = {}
    for tensor, size in zip(tensors, sizes):
        key = layer_key(tensor.name)
        layers[key] = layers.get(key, 0) + copies * size
    return list(layers.values())


#: ``on_sample(index, grad)``: one sample's gradient of tensor ``index`` (H-linear criteria);
#: ``on_gradient(index, grad, hessian)``: G of tensor ``index`` (or one micro-batch's share of
#: it when nothing is buffered) with its H when kept.
SampleFn = Callable[[int, torch.Tensor], None]
GradientFn = Callable[[int, torch.Tensor, torch.Tensor | None], None]


def run_passes(model, tensors: Sequence[CoupledTensor], plan: PassPlan, samples: torch.Tensor,
               loss_fn: LossFn, on_sample: SampleFn, on_gradient: GradientFn,
               progress: bool = True, desc: str = "taylor importance") -> None:
    """Run ``plan``: every gradient goes to ``on_sample`` / ``on_gradient`` and is freed."""
    n = len(samples)
    bar = tqdm(total=plan.gradients(n), desc=desc, unit="grad", disable=not progress,
               leave=False, dynamic_ncols=True)
    with bar:
        for number, chunk in enumerate(plan.chunks):
            if len(plan.chunks) > 1:
                bar.set_postfix_str(f"layers chunk {number + 1}/{len(plan.chunks)}")
            _run_chunk(model, tensors, chunk, plan, samples, loss_fn, on_sample, on_gradient, bar)


def _run_chunk(model, tensors, chunk, plan, samples, loss_fn, on_sample, on_gradient, bar):
    params = [tensors[i].param for i in chunk]
    n = len(samples)
    hessian = FloatSums(transform=torch.square, scale=1.0 / n) if plan.hessian_buffer else None
    if plan.per_sample:
        seen: set[int] = set()

        def sample_hook(local: int, param, grad) -> None:
            index = chunk[local]
            seen.add(index)
            on_sample(index, grad)
            if hessian is not None:
                hessian(index, param, grad)
            bar.update(1)

        with watch_gradients(model, params, sample_hook):
            backward_passes(model, samples, 1, loss_fn, "", False, share=False)
        for index in chunk:  # weights the loss does not depend on
            if index not in seen:
                on_sample(index, torch.zeros_like(tensors[index].param))
    if plan.batch is None:
        return
    seen = set()
    sums = FloatSums() if plan.buffered_g else None

    def grad_hook(local: int, param, grad) -> None:
        index = chunk[local]
        seen.add(index)
        if sums is not None:
            sums(index, param, grad)
        else:
            # one pass over all samples (H complete), or a micro-batch of a linear criterion
            on_gradient(index, grad, hessian.pop(index) if hessian is not None else None)
        bar.update(1)

    with watch_gradients(model, params, grad_hook):
        backward_passes(model, samples, plan.batch, loss_fn, "", False)
    for index in chunk:
        grad = sums.pop(index) if sums is not None else None
        if grad is None and index in seen:
            continue  # scored in its hook
        if grad is None:
            grad = torch.zeros_like(tensors[index].param)
        on_gradient(index, grad, hessian.pop(index) if hessian is not None else None)
