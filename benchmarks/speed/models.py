"""Random-weight models at real shapes, and the pruning plans the speed benchmark measures.

Shapes (configs written out here; no download): RoBERTa-base (encoder, sequence
classification), SmolLM2-135M and LLaMA-7B (decoders). ``--quick`` swaps in scaled-down
shapes with the same structure (grouped-query attention, tied embeddings, FFN widths whose
20% cut is unaligned) so the whole script runs on a CPU in about a minute.

Plans are real lmprune plans on the random weights:

* ``uniform``: every layer pruned at the same per-unit sparsity (heads and FFN neurons),
  scored by Taylor element1 (decoders) or weight magnitude (encoders), ``prune.round_to``
  ``auto`` (aligned) or 1 (exact counts);
* ``llm-pruner``: LLM-Pruner's layout (first 4 and last 2 layers dense, the rest pruned
  harder so that the same share of the body goes): two different widths;
* ``global``: APT's global selection (``select_within_budget``) of heads and neurons by
  magnitude across all layers: a different width in every layer;
* ``sublayers``: whole attention and FFN sublayers removed (the shape of RI's plans);
* ``with_hidden``: heads, FFN neurons and the hidden size at one sparsity (encoders): every
  body matrix shrinks on both sides, and so do the layer norms and residual adds over the
  hidden size, which heads-and-neurons pruning leaves at full width.
"""
from __future__ import annotations

import copy
import random

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaConfig
from transformers import RobertaConfig

from lmprune.arch import describe
from lmprune.pruners.apt_budget import model_costs, select_within_budget
from lmprune.pruners.selection import select
from lmprune.scorers.magnitude import magnitude_scores
from lmprune.structures import Masks, remove
from lmprune.structures.alignment import rounding_for
from lmprune.structures.counting import count_parameters


def _roberta(quick: bool) -> RobertaConfig:
    if quick:
        return RobertaConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2,
                             num_attention_heads=4, intermediate_size=512,
                             max_position_embeddings=130, type_vocab_size=1)
    return RobertaConfig(vocab_size=50265, hidden_size=768, num_hidden_layers=12,
                         num_attention_heads=12, intermediate_size=3072,
                         max_position_embeddings=514, type_vocab_size=1)


def _smollm2(quick: bool) -> LlamaConfig:
    if quick:
        return LlamaConfig(vocab_size=512, hidden_size=96, intermediate_size=384,
                           num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=2,
                           head_dim=16, max_position_embeddings=512, tie_word_embeddings=True)
    return LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                       num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                       head_dim=64, max_position_embeddings=8192, rms_norm_eps=1e-5,
                       rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                       tie_word_embeddings=True)


def _llama7b(quick: bool) -> LlamaConfig:
    if quick:
        return LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=344,
                           num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=4,
                           head_dim=32, max_position_embeddings=512, tie_word_embeddings=False)
    return LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                       max_position_embeddings=2048, rms_norm_eps=1e-6,
                       tie_word_embeddings=False)


SHAPES = {"roberta-base": (_roberta, AutoModelForSequenceClassification),
          "smollm2-135m": (_smollm2, AutoModelForCausalLM),
          "llama-7b": (_llama7b, AutoModelForCausalLM)}


def build(shape: str, device: torch.device, dtype: torch.dtype, quick: bool, seed: int = 0,
          attn: str | None = None):
    """A model of ``shape`` with random weights (the stock init), built on ``device``;
    ``attn``: transformers' attention implementation (None: its default, sdpa)."""
    make_config, auto = SHAPES[shape]
    torch.manual_seed(seed)
    extra = {"attn_implementation": attn} if attn else {}
    with torch.device(device):
        model = auto.from_config(make_config(quick), dtype=dtype, **extra)
    return model.eval()


def encoder_batch(batch: int, seq: int, quick: bool):
    """The RoBERTa-base shape (bf16 on a GPU, fp32 on a CPU) on lmprune's default device and a
    random unpadded batch with an all-ones ``attention_mask``, as a tokenizer gives it."""
    from lmprune.device import resolve_device

    device = resolve_device(None)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build("roberta-base", device, dtype, quick)
    ids = torch.randint(5, model.config.vocab_size - 1, (batch, seq), device=device)
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def forward_for(model, mode: str):
    """What the encoder probes call: ``eager`` (the model itself), a compile mode
    (``CompiledForward``), or ``MODE:masked`` (compiled without lmprune's unpadded-batch
    handling: the all-ones mask goes into the graph, as plain ``torch.compile`` does)."""
    from lmprune.evaluation.compiled import CompiledForward

    base, _, how = mode.partition(":")
    if base == "eager":
        return model
    return CompiledForward(model, base, unpadded=how != "masked")


def body_share_removed(dense, pruned) -> float:
    return 1 - count_parameters(pruned).body / count_parameters(dense).body


def apply(dense, masks: Masks):
    """A pruned copy of ``dense`` (the dense model is left as it is)."""
    model = copy.deepcopy(dense)
    remove(model, masks, describe(model))
    return model


def uniform(structure, scores, sparsity: float, round_to, layer_range=None) -> Masks:
    return select(structure, scores, sparsity, ["heads", "neurons"], round_to, layer_range)


def with_hidden(structure, scores, removed: float, round_to) -> Masks:
    """Heads, FFN neurons and hidden channels, all at the sparsity ``s`` with
    ``(1 - s)^2 = 1 - removed``: the body's matrices lose about ``removed`` of their
    parameters (``scores`` must hold hidden-channel scores)."""
    sparsity = 1 - (1 - removed) ** 0.5
    return select(structure, scores, sparsity, ["heads", "neurons", "hidden"], round_to)


def llm_pruner(structure, scores, target: float, round_to) -> Masks:
    """First 4 and last 2 layers dense; the others at the sparsity that removes ``target`` of
    the heads and neurons overall (LLM-Pruner's layer range)."""
    layers = len(structure.layers)
    start, end = (4, layers - 2) if layers > 12 else (1, layers - 1)
    sparsity = min(0.95, target * layers / (end - start))
    return uniform(structure, scores, sparsity, round_to, [start, end])


def global_selection(model, structure, sparsity: float, round_to) -> Masks:
    """APT's global density ranking of heads and neurons (magnitude) under a parameter budget."""
    scores = magnitude_scores(model, structure, kinds=("heads", "neurons"))
    sal = {"heads": torch.stack([scores.heads[s.name] for s in structure.attention]),
           "neurons": torch.stack([scores.neurons[s.name] for s in structure.ffn])}
    costs = model_costs(model, structure)
    costs = {"heads": costs["heads"], "neurons": costs["neurons"]}
    total = sum(float((sal[k].shape[1] * costs[k]).sum()) for k in sal)
    width = structure.ffn[0].width
    rounding = {"neurons": rounding_for(round_to, "neurons", width)}
    keep = select_within_budget(sal, costs, (1 - sparsity) * total, round_to=rounding)
    masks = Masks()
    for i, site in enumerate(structure.attention):
        masks.heads[site.name] = keep["heads"][i].float()
    for i, site in enumerate(structure.ffn):
        masks.neurons[site.name] = keep["neurons"][i].float()
    return masks


def sublayers(model, structure, target: float, seed: int = 0) -> Masks:
    """Whole attention / FFN sublayers removed in a seeded order until ``target`` of the body
    is gone (layer 0's attention kept: it records the cache length cheaply either way)."""
    from lmprune.structures.counting import sublayer_cost

    body = count_parameters(model, structure).body
    sites = [s for s in list(structure.attention) + list(structure.ffn)
             if s.name != structure.attention[0].name]
    random.Random(seed).shuffle(sites)
    masks, removed = Masks.ones(structure, ("attention", "ffn")), 0
    for site in sites:
        if removed >= target * body:
            break
        kind = "attention" if site in structure.attention else "ffn"
        getattr(masks, kind)[site.name] = torch.tensor(0.0)
        removed += sublayer_cost(model, site)
    return masks


def widths(model) -> dict:
    """FFN widths and query heads per layer, summarised (uniform: one number), and the
    hidden size."""
    structure = describe(model)
    ffn = sorted({s.width for s in structure.ffn})
    heads = sorted({s.num_heads for s in structure.attention})
    return {"ffn": ffn if len(ffn) > 1 else (ffn[0] if ffn else None),
            "heads": heads if len(heads) > 1 else (heads[0] if heads else None),
            "ffn_sites": len(structure.ffn), "attention_sites": len(structure.attention),
            "hidden": structure.hidden.size}
