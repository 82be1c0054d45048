"""Tiny models and hand-written reference computations for scorer tests."""
from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from lmprune.zoo import tiny_config

AGGREGATIONS = ("sum", "mean", "max", "prod", "last")


def one_layer_llama(num_kv_heads: int = 2, seed: int = 0, layers: int = 1,
                    dtype: torch.dtype = torch.float64):
    """tiny-llama with ``layers`` layers (8 heads of 8 dims, hidden 64, FFN 96), eval.

    float64 by default: the scorer and the references sum gradients in different orders, and
    in float32 that alone moves a score with cancellation (the vector metric, prod) by ~1e-5.
    """
    config = tiny_config("tiny-llama")
    config.num_hidden_layers = layers
    config.num_key_value_heads = num_kv_heads
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def token_samples(n: int = 4, length: int = 16, seed: int = 0, vocab: int = 128) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (n, length), generator=g)


def reference_gradients(model, samples):
    """(G, H) by plain autograd: G = gradient of the batch's mean loss, H = mean over samples
    of the squared per-sample gradients. Leaves no gradient behind."""
    params = dict(model.named_parameters())
    model.zero_grad(set_to_none=True)
    model(input_ids=samples, labels=samples).loss.backward()
    grads = {n: p.grad.detach().double().clone() for n, p in params.items()}
    hess = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    for sample in samples:
        model.zero_grad(set_to_none=True)
        model(input_ids=sample[None], labels=sample[None]).loss.backward()
        for n, p in params.items():
            hess[n] += p.grad.detach().double() ** 2 / len(samples)
    model.zero_grad(set_to_none=True)
    return grads, hess


def reference_salience(metric: str, w, g, h, index) -> float:
    """The metric of the slice ``index`` of one tensor, written straight from the formulas
    (lmprune's ``group`` reduction: one number for all the group's elements)."""
    w, g, h = w[index].double(), g[index].double(), h[index].double()
    if metric == "vector":
        return float((g * w).sum().abs())
    if metric == "element1":
        return float((g * w).abs().sum())
    if metric == "param_second":
        return float((w * h * w).sum())
    return float((g * w - 0.5 * w * h * w).abs().sum())


def reference_channels(metric: str, w, g, h, index, channels: int) -> torch.Tensor:
    """LLM-Pruner's per-channel values of the slice ``index`` (rows when it has one
    subscript, columns when two): each row's (column's) value as in ``hf_llama_pruner``
    (``vectorize``: |sum of the row|; ``param_*``: sum of |.| of the row), then rows at the
    same offset of every ``channels`` rows added up (a key/value group's query heads)."""
    w, g, h = w[index].double(), g[index].double(), h[index].double()
    dim = 1 if len(index) == 2 else 0
    if metric == "vector":
        per_row = (g * w).sum(1 - dim).abs() if w.dim() == 2 else (g * w).abs()
    else:
        s = {"element1": (g * w).abs(), "param_second": (w * h * w).abs(),
             "element2": (g * w - 0.5 * w * h * w).abs()}[metric]
        per_row = s.sum(1 - dim) if w.dim() == 2 else s
    return per_row.reshape(-1, channels).sum(0)


def reference_aggregate(values: list, how: str):
    """Combine per-tensor values (numbers, or per-channel tensors element by element)."""
    t = torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in values])
    out = {"sum": t.sum(0), "mean": t.mean(0), "max": t.max(0).values, "prod": t.prod(0),
           "last": t[-1]}[how]
    return out.item() if out.dim() == 0 else out


def group_parts(kind: str, unit: int, d: int = 8, group: int = 4,
                p: str = "model.layers.0.") -> list:
    """(parameter name, index) of every tensor slice of one group of layer 0, in parameter
    order, for tiny-llama with grouped-query attention (``group`` query heads per kv head)."""
    rows, cols = (lambda a, b: (slice(a, b),)), (lambda a, b: (slice(None), slice(a, b)))
    a = p + "self_attn."
    if kind == "heads":
        return [(a + "q_proj.weight", rows(unit * d, unit * d + d)),
                (a + "o_proj.weight", cols(unit * d, unit * d + d))]
    if kind == "kv_groups":
        q0, q1 = unit * group * d, (unit + 1) * group * d
        kv = rows(unit * d, unit * d + d)
        return [(a + "q_proj.weight", rows(q0, q1)), (a + "k_proj.weight", kv),
                (a + "v_proj.weight", kv), (a + "o_proj.weight", cols(q0, q1))]
    if kind == "neurons":
        m = p + "mlp."
        return [(m + "gate_proj.weight", rows(unit, unit + 1)),
                (m + "up_proj.weight", rows(unit, unit + 1)),
                (m + "down_proj.weight", cols(unit, unit + 1))]
    raise ValueError(kind)


def hidden_parts(c: int) -> list:
    """Every tensor slice of hidden channel ``c`` of a one-layer tiny-llama, parameter order."""
    col, row, el = (slice(None), slice(c, c + 1)), (slice(c, c + 1),), (slice(c, c + 1),)
    p = "model.layers.0."
    return [("model.embed_tokens.weight", col), (p + "self_attn.q_proj.weight", col),
            (p + "self_attn.k_proj.weight", col), (p + "self_attn.v_proj.weight", col),
            (p + "self_attn.o_proj.weight", row), (p + "mlp.gate_proj.weight", col),
            (p + "mlp.up_proj.weight", col), (p + "mlp.down_proj.weight", row),
            (p + "input_layernorm.weight", el), (p + "post_attention_layernorm.weight", el),
            ("model.norm.weight", el), ("lm_head.weight", col)]


def whole_parts(names: list[str]) -> list:
    return [(n, (slice(None),)) for n in names]
