"""Export pruned decoders in the Nemotron-NAS / DeciLM format that vLLM and llama.cpp serve.

Serving engines reject the per-layer widths pruning produces, except through this format
(see :mod:`lmprune.structures.decilm_code` for its fields and readers). A pruned model fits
when (:func:`decilm_fit` says which rule a model breaks):

1. it is a LLaMA (or Mistral without a sliding window) causal LM: DeciLM layers are LLaMA
   layers without q/k/v-only biases (Qwen2's);
2. every attention sublayer that is kept has the same number of query heads (DeciLM's
   ``num_attention_heads`` is global), and its key/value heads divide that number
   (``n_heads_in_group`` is an integer) — so query-head pruning with the same count in every
   layer fits, key/value-group pruning fits when every layer keeps the same number of query
   heads, and per-layer query-head counts do not;
3. every FFN that is kept has a width that is a multiple of 256 (readers derive it from
   ``ffn_mult`` and round up to 256): prune with ``prune.round_to=256``;
4. removed sublayers (RI, ShortGPT layers) are ``no_op``; removed layers simply do not exist.

One more reader constraint is a note, not a refusal: llama.cpp's converter takes the head size
as ``hidden_size / num_attention_heads``, so a model whose ``head_dim`` differs from that
(e.g. LLaMA-7B with 26 of 32 heads kept: 4096 / 26) loads in vLLM and transformers only.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from lmprune.arch import describe
from lmprune.arch.describe import get_module, is_skipped
from lmprune.errors import LmpruneError
from lmprune.structures import decilm_code, hf_code
from lmprune.structures.decilm_code import ATTENTION_FIELDS, FFN_FIELDS, FFN_STEP, ffn_width
from lmprune.structures.saving import SaveResult, atomic_directory, write_companions

MODEL_FILE, CODE_FILE = "modeling_decilm.py", "hf_code.py"
AUTO_MAP = {"AutoConfig": "modeling_decilm.DeciLMConfig",
            "AutoModelForCausalLM": "modeling_decilm.DeciLMForCausalLM"}
FORMATS = ("auto", "decilm")
#: Config keys copied from the model's (LLaMA) config into the DeciLM config.
COPIED = ("vocab_size", "hidden_size", "hidden_act", "max_position_embeddings", "rms_norm_eps",
          "initializer_range", "rope_parameters", "attention_bias", "mlp_bias",
          "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id")


@dataclass
class DecilmFit:
    """Whether a model fits the DeciLM format; ``problems`` say why not, ``notes`` what a
    reader may not support."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    config: dict | None = None  # the DeciLM config.json, when it fits

    @property
    def fits(self) -> bool:
        return not self.problems


def decilm_family_problems(model: nn.Module) -> list[str]:
    config = model.config
    if config.model_type not in ("llama", "mistral"):
        return [f"model_type {config.model_type!r}: DeciLM layers are LLaMA layers (llama, "
                f"mistral without a sliding window; Qwen2's q/k/v-only biases do not fit)"]
    if config.model_type == "mistral" and getattr(config, "sliding_window", None):
        return [f"a sliding window of {config.sliding_window} tokens: lmprune writes DeciLM "
                f"layers with full attention only"]
    if not hasattr(model, "lm_head"):
        return ["only causal LMs (with an lm_head) are exported to DeciLM"]
    return []


def _blocks(model: nn.Module, structure) -> tuple[list[dict], int, list[str]]:
    """(block_configs, global query heads, problems)."""
    hidden, problems = structure.hidden.size, []
    heads = {s.num_heads for s in structure.attention}
    if len(heads) > 1:
        counts = {s.name: s.num_heads for s in structure.attention}
        problems.append(f"query heads differ between layers ({_short(counts)}); DeciLM has one "
                        f"num_attention_heads for every layer (prune the same count per layer)")
    global_heads = max(heads) if heads else model.config.num_attention_heads
    attention = {s.layer: s for s in structure.attention}
    ffn = {s.layer: s for s in structure.ffn}
    blocks = []
    for layer in structure.layers:
        blocks.append({"attention": _attention_block(model, attention.get(layer.name), layer,
                                                     global_heads, problems),
                       "ffn": _ffn_block(model, ffn.get(layer.name), layer, hidden, problems)})
    return blocks, global_heads, problems


def _attention_block(model, site, layer, heads: int, problems: list[str]) -> dict:
    if site is None:
        block = get_module(model, f"{layer.stack}.{layer.index}.self_attn")
        if getattr(block, "bias", None) is not None:
            problems.append(f"{layer.name}: the removed attention keeps a constant output bias")
        return {**ATTENTION_FIELDS, "no_op": True}
    if heads % site.num_kv_heads:
        problems.append(f"{site.name}: {site.num_kv_heads} key/value heads do not divide the "
                        f"{heads} query heads (n_heads_in_group must be an integer)")
        return {**ATTENTION_FIELDS, "n_heads_in_group": 1}
    return {**ATTENTION_FIELDS, "n_heads_in_group": heads // site.num_kv_heads}


def _ffn_block(model, site, layer, hidden: int, problems: list[str]) -> dict:
    if site is None:
        block = get_module(model, f"{layer.stack}.{layer.index}.mlp")
        if getattr(block, "bias", None) is not None:
            problems.append(f"{layer.name}: the removed FFN keeps a constant output bias")
        return {**FFN_FIELDS, "no_op": True}
    if site.width % FFN_STEP:
        problems.append(f"{site.name} keeps {site.width} neurons; DeciLM derives FFN widths "
                        f"from ffn_mult rounded up to a multiple of {FFN_STEP} (prune with "
                        f"prune.round_to={FFN_STEP})")
        return {**FFN_FIELDS, "ffn_mult": 1.0}
    mult = round(1.5 * site.width / hidden, 6)
    if ffn_width(mult, hidden) != site.width:
        problems.append(f"{site.name}: no ffn_mult gives {site.width} neurons at hidden size "
                        f"{hidden}")
    return {**FFN_FIELDS, "ffn_mult": mult}


def _short(counts: dict) -> str:
    items = [f"{k} {v}" for k, v in counts.items()]
    return ", ".join(items[:4]) + (f", ... ({len(items)} sites)" if len(items) > 4 else "")


def decilm_fit(model: nn.Module) -> DecilmFit:
    """Check ``model`` against the format's rules (module docstring); the config if it fits."""
    problems = decilm_family_problems(model)
    if problems:
        return DecilmFit(problems)
    structure = describe(model)
    blocks, heads, problems = _blocks(model, structure)
    if any(is_skipped(m) and getattr(m, "bias", None) is not None for m in model.modules()):
        problems.append("a removed sublayer keeps a constant output bias")
    head_dim = next((s.head_dim for s in structure.attention),
                    getattr(model.config, "head_dim", None))
    notes = []
    if head_dim and heads * head_dim != structure.hidden.size:
        notes.append(f"head_dim {head_dim} is not hidden_size / num_attention_heads "
                     f"({structure.hidden.size} / {heads}): vLLM and transformers read head_dim; "
                     f"llama.cpp's converter derives it from the ratio and cannot convert this "
                     f"model")
    if problems:
        return DecilmFit(problems, notes)
    config = {key: getattr(model.config, key) for key in COPIED if hasattr(model.config, key)}
    rope = config.get("rope_parameters") or {}
    config.update({
        "architectures": ["DeciLMForCausalLM"], "model_type": "nemotron-nas",
        "auto_map": dict(AUTO_MAP), "num_attention_heads": heads, "head_dim": head_dim,
        "num_hidden_layers": len(blocks), "block_configs": blocks,
        "rope_theta": rope.get("rope_theta", getattr(model.config, "rope_theta", 10000.0)),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "lmprune_format": "decilm"})
    return DecilmFit([], notes, config)


def save_decilm(model: nn.Module, path, *, tokenizer=None, plan=None, overwrite: bool = False,
                copy_files=()):
    """Write ``model`` as a DeciLM-format directory, atomically; raises when it does not fit.
    ``copy_files`` (e.g. a tokenizer's files) are copied in as they are."""

    fit = decilm_fit(model)
    if not fit.fits:
        raise LmpruneError("this model does not fit the DeciLM format:\n"
                           + "\n".join(f"  - {p}" for p in fit.problems))
    path = Path(path)
    with atomic_directory(path, overwrite) as tmp:
        model.save_pretrained(tmp)  # weights (LLaMA names; no-op sublayers have none)
        (tmp / "config.json").write_text(json.dumps(fit.config, indent=2, sort_keys=True) + "\n")
        shutil.copyfile(decilm_code.__file__, tmp / MODEL_FILE)
        shutil.copyfile(hf_code.__file__, tmp / CODE_FILE)
        write_companions(tmp, tokenizer, plan, copy_files)
    hint = ("vllm serve PATH --trust-remote-code; AutoModelForCausalLM.from_pretrained(PATH, "
            "trust_remote_code=True); lmprune.load_pretrained(PATH)")
    return SaveResult(path, "decilm", hint, notes=fit.notes)


def is_decilm_dir(path) -> bool:
    config = Path(path) / "config.json"
    return config.exists() and json.loads(config.read_text()).get("lmprune_format") == "decilm"


def load_decilm(path, **kwargs) -> nn.Module:
    """Load a DeciLM directory written by lmprune with lmprune's own copy of its code (no
    ``trust_remote_code``: the code files must be identical to the ones lmprune ships)."""
    path = Path(path)
    for name, source in ((MODEL_FILE, decilm_code.__file__), (CODE_FILE, hf_code.__file__)):
        shipped = path / name
        if not shipped.exists() or shipped.read_bytes() != Path(source).read_bytes():
            raise LmpruneError(f"{path}/{name} differs from lmprune's: load this directory with "
                               f"AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)"
                               f" if you trust it")
    config = decilm_code.DeciLMConfig.from_pretrained(path)
    return decilm_code.DeciLMForCausalLM.from_pretrained(path, config=config, **kwargs).eval()
