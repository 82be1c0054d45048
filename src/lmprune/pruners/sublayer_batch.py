"""Perplexity of the model without each of several sublayers, several in one forward pass.

RI needs one perplexity per candidate sublayer, each a forward over the same windows with
that sublayer removed. On a GPU a small model is bound by kernel launches, not arithmetic, so
``K`` candidates go through one forward: the windows are repeated ``K`` times and a forward
hook on each candidate's output projection zeroes the output for *its* copy of the windows
only. That is exactly what ``apply_masks`` does with a scalar sublayer mask of 0 (it
multiplies the same output by the mask), so the perplexities are those of
:func:`lmprune.pruners.sublayer_search.masked_perplexity`, row for row.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from lmprune.arch import ModelStructure
from lmprune.structures import apply_masks


def _output_path(structure: ModelStructure, name: str) -> str:
    for site in structure.attention:
        if site.name == name:
            return site.o
    for site in structure.ffn:
        if site.name == name:
            return site.out
    raise KeyError(name)


@torch.no_grad()
def candidate_perplexities(model: nn.Module, structure: ModelStructure, windows: torch.Tensor,
                           base_masks, names: Sequence[str],
                           rows_per_pass: int = 64) -> dict[str, float]:
    """``{name: perplexity of the model without sublayer name}`` on ``windows`` [N, L], with
    ``base_masks`` (sublayers already removed) applied throughout."""
    n = len(windows)
    per_pass = max(1, rows_per_pass // n)
    device = next(model.parameters()).device
    windows = windows.to(device)
    out: dict[str, float] = {}
    model.eval()
    with apply_masks(model, base_masks, structure):
        for start in range(0, len(names), per_pass):
            chunk = list(names[start:start + per_pass])
            out.update(_one_pass(model, structure, windows, chunk))
    return out


def _one_pass(model, structure, windows, chunk) -> dict[str, float]:
    n = len(windows)
    handles = []
    try:
        for i, name in enumerate(chunk):
            keep = torch.ones(len(chunk) * n, device=windows.device)
            keep[i * n:(i + 1) * n] = 0.0
            module = model.get_submodule(_output_path(structure, name))
            handles.append(module.register_forward_hook(
                lambda m, args, output, k=keep: output * k.to(output)[:, None, None]))
        ids = windows.repeat(len(chunk), 1)
        logits = model(input_ids=ids).logits[:, :-1]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        targets = ids[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                targets.reshape(-1), reduction="none")
        per_row = nll.view(len(ids), -1).sum(1).view(len(chunk), n).sum(1)
    finally:
        for handle in handles:
            handle.remove()
    tokens = targets.shape[1] * n
    return {name: math.exp(float(total) / tokens) for name, total in zip(chunk, per_row)}
