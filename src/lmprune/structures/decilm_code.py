"""Code shipped inside DeciLM-format checkpoints (copied there as ``modeling_decilm.py``).

The Nemotron-NAS / DeciLM format (NVIDIA's Llama-3.1-Nemotron-51B and -49B) describes a
LLaMA-style decoder whose layers differ: ``config.block_configs[i]`` holds

* ``attention``: ``no_op`` (the sublayer is gone), ``replace_with_linear``, ``sparsify``,
  ``n_heads_in_group`` (query heads per key/value head: the layer has
  ``num_attention_heads / n_heads_in_group`` key/value heads), ``window_length``,
  ``num_sink_tokens``, ``use_prefill_window_in_sink_attention``, ``unshifted_sink``;
* ``ffn``: ``no_op``, ``replace_with_linear``, ``sparsify``, ``ffn_mult`` (the FFN width is
  ``int(2 * ffn_mult * hidden_size / 3)`` rounded up to a multiple of 256).

``num_attention_heads``, ``hidden_size`` and ``head_dim`` are global. vLLM
(``DeciLMForCausalLM``, ``vllm/model_executor/models/nemotron_nas.py``) and llama.cpp
(``convert_hf_to_gguf.py``, ``DeciModel``) read these fields; the weights are named as in
LLaMA, and a no-op sublayer has no weights at all.

This file lets transformers load such a directory (``AutoModelForCausalLM.from_pretrained(
path, trust_remote_code=True)``): :class:`DeciLMConfig` parses ``block_configs`` into objects
with those attributes, and :class:`DeciLMForCausalLM` builds a stock ``LlamaForCausalLM`` and
gives each layer its widths with the same ``restructure`` that lmprune's other pruned
checkpoints use (``hf_code.py``, shipped beside this file). It imports only torch and
transformers, and is written for lmprune's exports, not as a full reimplementation of
NVIDIA's code (no linear replacements, sliding windows or sinks).
"""
from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM, PretrainedConfig

from .hf_code import restructure

ATTENTION_FIELDS = {"no_op": False, "replace_with_linear": False, "sparsify": None,
                    "n_heads_in_group": None, "window_length": None, "num_sink_tokens": None,
                    "use_prefill_window_in_sink_attention": False, "unshifted_sink": False}
FFN_FIELDS = {"no_op": False, "replace_with_linear": False, "sparsify": None, "ffn_mult": None}
FFN_STEP = 256


class Fields:
    """Attribute access to one JSON mapping (``block.attention.no_op``), defaults filled in."""

    def __init__(self, defaults: dict, values: dict):
        unknown = sorted(set(values) - set(defaults))
        if unknown:
            raise ValueError(f"unsupported DeciLM block fields {unknown}")
        self.__dict__.update({**defaults, **values})

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class BlockConfig:
    def __init__(self, attention: dict, ffn: dict):
        self.attention = Fields(ATTENTION_FIELDS, _as_dict(attention))
        self.ffn = Fields(FFN_FIELDS, _as_dict(ffn))

    def to_dict(self) -> dict:
        return {"attention": self.attention.to_dict(), "ffn": self.ffn.to_dict()}


def _as_dict(value) -> dict:
    return value.to_dict() if hasattr(value, "to_dict") else dict(value)


def ffn_width(ffn_mult: float, hidden_size: int) -> int:
    """The FFN width DeciLM readers derive from ``ffn_mult`` (vLLM's and llama.cpp's formula)."""
    width = int(2 * ffn_mult * hidden_size / 3)
    return width if width % FFN_STEP == 0 else width + FFN_STEP - width % FFN_STEP


class DeciLMConfig(PretrainedConfig):
    """The config of a DeciLM-format checkpoint (fields as in NVIDIA's Nemotron-NAS models)."""

    model_type = "nemotron-nas"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, block_configs=None, vocab_size: int = 32000, hidden_size: int = 4096,
                 num_attention_heads: int = 32, head_dim: int | None = None,
                 num_hidden_layers: int = 32, hidden_act: str = "silu",
                 max_position_embeddings: int = 2048, rms_norm_eps: float = 1e-6,
                 initializer_range: float = 0.02, rope_theta: float = 10000.0,
                 rope_parameters: dict | None = None,
                 attention_bias: bool = False, mlp_bias: bool = False,
                 tie_word_embeddings: bool = False, use_cache: bool = True, **kwargs):
        self.block_configs = [b if isinstance(b, BlockConfig) else BlockConfig(**_as_dict(b))
                              for b in (block_configs or [])]
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.num_attention_heads, self.num_hidden_layers = num_attention_heads, num_hidden_layers
        self.head_dim = head_dim or hidden_size // num_attention_heads
        self.hidden_act, self.max_position_embeddings = hidden_act, max_position_embeddings
        self.rms_norm_eps, self.initializer_range = rms_norm_eps, initializer_range
        self.rope_theta = rope_theta
        self.rope_parameters = rope_parameters or {"rope_type": "default", "rope_theta": rope_theta}
        self.attention_bias, self.mlp_bias, self.use_cache = attention_bias, mlp_bias, use_cache
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
        if self.block_configs and len(self.block_configs) != num_hidden_layers:
            raise ValueError(f"{len(self.block_configs)} block_configs for {num_hidden_layers} "
                             f"layers")

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["block_configs"] = [b.to_dict() for b in self.block_configs]
        return out

    def layer_widths(self, index: int) -> tuple[int | None, int | None]:
        """(key/value heads or None for a no-op attention, FFN width or None for a no-op FFN)."""
        block = self.block_configs[index]
        kv = None if block.attention.no_op else self.num_attention_heads // block.attention.n_heads_in_group
        ffn = None if block.ffn.no_op else ffn_width(block.ffn.ffn_mult, self.hidden_size)
        return kv, ffn

    def llama_config(self) -> LlamaConfig:
        """A stock LlamaConfig to build the modules before ``restructure`` (widths it accepts:
        one query head per ``head_dim`` of the hidden size, the widest FFN)."""
        widths = [self.layer_widths(i)[1] for i in range(self.num_hidden_layers)]
        heads = max(1, self.hidden_size // self.head_dim)
        return LlamaConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size,
            intermediate_size=max([w for w in widths if w] or [1]),
            num_hidden_layers=self.num_hidden_layers, num_attention_heads=heads,
            num_key_value_heads=heads, head_dim=self.head_dim, hidden_act=self.hidden_act,
            max_position_embeddings=self.max_position_embeddings, rms_norm_eps=self.rms_norm_eps,
            initializer_range=self.initializer_range, rope_parameters=self.rope_parameters,
            attention_bias=self.attention_bias, mlp_bias=self.mlp_bias,
            tie_word_embeddings=self.tie_word_embeddings, use_cache=self.use_cache,
            bos_token_id=self.bos_token_id, eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id)

    def restructure_spec(self) -> dict:
        """What ``hf_code.restructure`` changes in the stock model built from llama_config()."""
        h, hd, heads = self.hidden_size, self.head_dim, self.num_attention_heads
        params, attrs, skips = {}, {}, {}
        for i in range(self.num_hidden_layers):
            kv, ffn = self.layer_widths(i)
            layer = f"model.layers.{i}"
            if kv is None:
                skips[f"{layer}.self_attn"] = {"kind": "decoder_attention", "hidden": h,
                                               "head_dim": hd, "layer_idx": i}
                skips[f"{layer}.input_layernorm"] = {"kind": "norm", "hidden": h}
            else:
                for name, rows in (("q_proj", heads), ("k_proj", kv), ("v_proj", kv)):
                    params[f"{layer}.self_attn.{name}.weight"] = [rows * hd, h]
                    if self.attention_bias:
                        params[f"{layer}.self_attn.{name}.bias"] = [rows * hd]
                params[f"{layer}.self_attn.o_proj.weight"] = [h, heads * hd]
                attrs[f"{layer}.self_attn"] = {"num_key_value_groups": heads // kv}
            if ffn is None:
                skips[f"{layer}.mlp"] = {"kind": "decoder_mlp", "hidden": h}
                skips[f"{layer}.post_attention_layernorm"] = {"kind": "norm", "hidden": h}
            else:
                for name in ("gate_proj", "up_proj"):
                    params[f"{layer}.mlp.{name}.weight"] = [ffn, h]
                params[f"{layer}.mlp.down_proj.weight"] = [h, ffn]
        return {"params": params, "attrs": attrs, "skips": skips}


class DeciLMForCausalLM(LlamaForCausalLM):
    """A stock LlamaForCausalLM given the per-layer widths of a DeciLM config."""

    config_class = DeciLMConfig

    def __init__(self, config: DeciLMConfig, *args, **kwargs):
        if isinstance(config, DeciLMConfig):
            spec, config = config.restructure_spec(), config.llama_config()
        else:  # already a LlamaConfig (e.g. a copy made by transformers)
            spec = None
        super().__init__(config, *args, **kwargs)
        if spec is not None:
            restructure(self, spec)
