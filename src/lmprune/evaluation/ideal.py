"""The speedup a pruned model could reach at best, to set measured speedups against.

* **Compute-bound** work (an encoder forward at batch 128, a decoder's prefill): time is
  proportional to the matrix-multiply FLOPs, so the ideal speedup is the FLOP ratio
  dense / pruned (:func:`lmprune.structures.counting.count_flops`: every weight matmul,
  the output head included, plus attention scores at the given length).
* **Memory-bound** work (decoding a few sequences): every step reads every weight once, so
  the ideal speedup is the ratio of weight bytes read per step (:func:`weight_bytes`: every
  linear layer's weight and bias and every norm; an embedding table only when it is also
  the output head, since a lookup reads one row). KV-cache reads are left out: at the short
  contexts measured here they are under 1% of the weights.
* The **weight-read floor** of a decode step is ``weight_bytes / memory bandwidth``; a dense
  model far above it loses to overheads (kernel launches, Python) that pruning cannot remove.
"""
from __future__ import annotations

from torch import nn

from lmprune.structures.counting import count_flops

#: Peak HBM bandwidth (bytes/s) of GPUs by name fragment, from the vendors' data sheets.
BANDWIDTH = {"H200": 4.8e12, "H100 NVL": 3.9e12, "H100 PCIe": 2.0e12, "H100": 3.35e12,
             "A100-SXM4-80GB": 2.04e12, "A100 80GB": 2.04e12, "A100": 1.56e12, "L40S": 0.864e12,
             "A10G": 0.6e12, "RTX 4090": 1.008e12}


def weight_bytes(model: nn.Module) -> int:
    """Bytes of weights one decode step reads (module docstring); shared tensors once."""
    seen, total = set(), 0
    for module in model.modules():
        is_norm = type(module).__name__.endswith(("Norm", "LayerNorm", "RMSNorm"))
        if not (isinstance(module, nn.Linear) or is_norm):
            continue
        for param in module.parameters(recurse=False):
            if id(param) not in seen:
                seen.add(id(param))
                total += param.numel() * param.element_size()
    return total


def ideal_speedups(dense: nn.Module, pruned: nn.Module, seq_len: int) -> dict[str, float]:
    """``{"flops": ..., "bytes": ...}``: dense / pruned FLOPs at ``seq_len`` and weight bytes."""
    flops = count_flops(dense, seq_len)["total"] / count_flops(pruned, seq_len)["total"]
    return {"flops": flops, "bytes": weight_bytes(dense) / weight_bytes(pruned)}


def bandwidth_of(device_name: str) -> float | None:
    """The data-sheet bandwidth of a GPU named ``device_name`` (None when unknown)."""
    for fragment, value in BANDWIDTH.items():  # longer fragments come first where it matters
        if fragment in device_name:
            return value
    return None


def weight_read_floor_ms(model: nn.Module, bandwidth: float) -> float:
    """Milliseconds one decode step needs at least to read the weights at ``bandwidth`` B/s."""
    return 1000 * weight_bytes(model) / bandwidth
