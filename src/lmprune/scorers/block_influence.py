"""Block influence of whole layers (ShortGPT, Men et al. 2024, Eq. 1).

``BI_i = 1 − E_{x,t}[cos(h_in_t, h_out_t)]``: one minus the mean cosine similarity between the
hidden state entering layer i and the one leaving it, over every token of every calibration
sample. A layer that barely changes its input (BI near 0) is the least important. Hidden states
are read with forward hooks on the stock layer modules, in fp32.
"""
from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from lmprune.arch import ModelStructure
from lmprune.errors import LmpruneError
from lmprune.pruners.selection import Scores


@torch.no_grad()
def block_influence_scores(model: nn.Module, structure: ModelStructure, samples: torch.Tensor,
                           batch_size: int = 8, progress: bool = True) -> Scores:
    """``layers[name] = mean over tokens of (1 − cos(h_in, h_out))`` for every layer."""
    if not isinstance(samples, torch.Tensor) or samples.dim() != 2 or samples.numel() == 0:
        raise LmpruneError("block influence needs calibration samples as a non-empty [N, L] "
                           "tensor of token ids")
    if not structure.layers:
        raise LmpruneError("the model has no layers to score")
    sums = {layer.name: 0.0 for layer in structure.layers}
    counts = {layer.name: 0 for layer in structure.layers}
    handles = []

    def hook(name):
        def record(module, args, kwargs, output):
            h_in = args[0] if args else kwargs["hidden_states"]
            h_out = output[0] if isinstance(output, tuple) else output
            cos = torch.nn.functional.cosine_similarity(h_in.float(), h_out.float(), dim=-1)
            sums[name] += float((1.0 - cos).sum())
            counts[name] += cos.numel()
        return record

    training = model.training
    try:
        for layer in structure.layers:
            module = model.get_submodule(f"{layer.stack}.{layer.index}")
            handles.append(module.register_forward_hook(hook(layer.name), with_kwargs=True))
        model.eval()
        device = next(model.parameters()).device
        starts = range(0, len(samples), batch_size)
        for start in tqdm(starts, desc="block influence", disable=not progress or len(starts) == 1,
                          leave=False):
            _forward(model, samples[start:start + batch_size].to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)
    return Scores(layers={name: sums[name] / max(counts[name], 1) for name in sums})


def _forward(model: nn.Module, ids: torch.Tensor) -> None:
    kwargs = {"input_ids": ids}
    if getattr(model.config, "is_encoder_decoder", False):
        kwargs["decoder_input_ids"] = ids
    if getattr(model.config, "use_cache", None) is not None:
        kwargs["use_cache"] = False
    model(**kwargs)
