"""Per-family module names, keyed by Hugging Face ``model_type``.

Paths in ``stacks`` and ``base_*`` are relative to the *base* model (``model.base_model``);
``head_*`` paths are relative to the top-level model and only used when the module exists
(a causal LM has ``lm_head``, a classifier ``score`` or ``classifier``, ...). Adding a family
that is built like one of these is a matter of adding a row.
"""
from __future__ import annotations

# Pre-norm decoders with SwiGLU FFNs and (grouped-query) attention.
DECODER = {
    "family": "llama",
    "stacks": {"layers": "layers"},
    "attention": [
        {"tag": "attn", "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
         "o": "self_attn.o_proj", "block": "self_attn", "norm": "input_layernorm",
         "head_dim_attr": "head_dim"},
    ],
    "ffn": [
        {"tag": "ffn", "ins": ("mlp.gate_proj", "mlp.up_proj"), "out": "mlp.down_proj",
         "block": "mlp", "norm": "post_attention_layernorm"},
    ],
    "base_entries": ("embed_tokens",),
    "base_embeddings": ("embed_tokens",),
    "base_norms": ("norm",),
    "head_readers": ("lm_head", "score", "qa_outputs"),
    "head_writers": (),
    "head_norms": (),
}

# Post-norm encoders (BERT, RoBERTa): the LayerNorm after each residual add stays when a
# sublayer is removed, so a removed sublayer computes LayerNorm(x) instead of x.
ENCODER = {
    "family": "bert",
    "stacks": {"layers": "encoder.layer"},
    "attention": [
        {"tag": "attn", "q": "attention.self.query", "k": "attention.self.key",
         "v": "attention.self.value", "o": "attention.output.dense", "block": "attention",
         "norm": None, "post_norm": "attention.output.LayerNorm",
         "head_dim_attr": "attention_head_size", "head_dim_module": "attention.self"},
    ],
    "ffn": [
        {"tag": "ffn", "ins": ("intermediate.dense",), "out": "output.dense", "block": "",
         "norm": None, "post_norm": "output.LayerNorm"},
    ],
    "base_entries": (),
    "base_embeddings": ("embeddings.word_embeddings", "embeddings.position_embeddings",
                        "embeddings.token_type_embeddings"),
    "base_norms": ("embeddings.LayerNorm",),
    # pooler/classifier dense layers read and write hidden-size vectors; tanh/gelu(0) = 0,
    # so masking their outputs with the hidden mask is exact.
    "head_readers": ("bert.pooler.dense", "roberta.pooler.dense", "pooler.dense", "classifier",
                     "classifier.dense", "classifier.out_proj", "qa_outputs",
                     "cls.predictions.transform.dense", "cls.predictions.decoder",
                     "lm_head.dense", "lm_head.decoder"),
    "head_writers": ("bert.pooler.dense", "roberta.pooler.dense", "pooler.dense",
                     "classifier.dense", "cls.predictions.transform.dense", "lm_head.dense"),
    "head_norms": ("cls.predictions.transform.LayerNorm", "lm_head.layer_norm"),
}

# MPNet: a post-norm BERT-family encoder whose q, k, v, o linears sit in ``attention.attn``
# and whose attention LayerNorm is ``attention.LayerNorm``. The encoder computes one relative
# position bias over all original heads (``encoder.relative_attention_bias``: [buckets, heads])
# and adds it to every layer's scores, so each layer records its kept heads
# (``shared_position_bias``) and takes its own slice of the bias (structures/hf_code.py).
MPNET = {
    "family": "bert",
    "stacks": {"layers": "encoder.layer"},
    "attention": [
        {"tag": "attn", "q": "attention.attn.q", "k": "attention.attn.k", "v": "attention.attn.v",
         "o": "attention.attn.o", "block": "attention", "norm": None,
         "post_norm": "attention.LayerNorm", "head_dim_attr": "attention_head_size",
         "head_dim_module": "attention.attn", "shared_position_bias": True},
    ],
    "ffn": ENCODER["ffn"],
    "base_entries": (),
    "base_embeddings": ("embeddings.word_embeddings", "embeddings.position_embeddings"),
    "base_norms": ("embeddings.LayerNorm",),
    "head_readers": ("pooler.dense", "mpnet.pooler.dense", "classifier", "classifier.dense",
                     "classifier.out_proj", "qa_outputs", "lm_head.dense", "lm_head.decoder"),
    "head_writers": ("pooler.dense", "mpnet.pooler.dense", "classifier.dense", "lm_head.dense"),
    "head_norms": ("lm_head.layer_norm",),
}

# T5: pre-norm encoder-decoder with relative position bias owned by the first block of
# each stack; encoder self, decoder self and decoder cross attention are separate sites.
T5 = {
    "family": "t5",
    "stacks": {"encoder": "encoder.block", "decoder": "decoder.block"},
    "attention": [
        {"tag": "self", "q": "layer.0.SelfAttention.q", "k": "layer.0.SelfAttention.k",
         "v": "layer.0.SelfAttention.v", "o": "layer.0.SelfAttention.o", "block": "layer.0",
         "norm": "layer.0.layer_norm", "head_dim_attr": "key_value_proj_dim",
         "head_dim_module": "layer.0.SelfAttention", "position_bias_first": True,
         "shared_position_bias": True},
        {"tag": "cross", "stacks": ("decoder",), "q": "layer.1.EncDecAttention.q",
         "k": "layer.1.EncDecAttention.k", "v": "layer.1.EncDecAttention.v",
         "o": "layer.1.EncDecAttention.o", "block": "layer.1", "norm": "layer.1.layer_norm",
         "head_dim_attr": "key_value_proj_dim", "head_dim_module": "layer.1.EncDecAttention",
         "shared_position_bias": True},
    ],
    "ffn": [
        {"tag": "ffn", "ins": ("layer.-1.DenseReluDense.wi", "layer.-1.DenseReluDense.wi_0",
                 "layer.-1.DenseReluDense.wi_1"),
         "out": "layer.-1.DenseReluDense.wo", "block": "layer.-1", "norm": "layer.-1.layer_norm"},
    ],
    "base_entries": ("shared",),
    "base_embeddings": ("shared",),
    "base_norms": ("encoder.final_layer_norm", "decoder.final_layer_norm"),
    "head_readers": ("lm_head", "qa_outputs", "classification_head.dense"),
    "head_writers": ("classification_head.dense",),
    "head_norms": (),
}

MODEL_TYPES = {
    "llama": DECODER,
    "mistral": DECODER,
    "qwen2": DECODER,
    "bert": ENCODER,
    "roberta": ENCODER,
    "mpnet": MPNET,
    "t5": T5,
}

# Config keys that hold each width, per family: ``layers`` maps a stack to its layer count.
CONFIG_KEYS = {
    "llama": {"hidden": "hidden_size", "ffn": "intermediate_size", "heads": "num_attention_heads",
              "kv": "num_key_value_heads", "head_dim": "head_dim",
              "layers": {"layers": "num_hidden_layers"}},
    "bert": {"hidden": "hidden_size", "ffn": "intermediate_size", "heads": "num_attention_heads",
             "kv": None, "head_dim": None, "layers": {"layers": "num_hidden_layers"}},
    "t5": {"hidden": "d_model", "ffn": "d_ff", "heads": "num_heads", "kv": None,
           "head_dim": "d_kv", "layers": {"encoder": "num_layers", "decoder": "num_decoder_layers"}},
}

# How a removed sublayer is replaced, per family (or per model_type where it differs from its
# family) and site kind: {module suffix: skip kind}. "block" is the site's block path, "norm"
# its pre-norm.
SKIPS = {
    "llama": {"attention": {"block": "decoder_attention", "norm": "norm"},
              "ffn": {"block": "decoder_mlp", "norm": "norm"}},
    "bert": {"attention": {"block": "bert_attention"},
             "ffn": {"intermediate": "bert_intermediate", "output": "bert_output"}},
    "t5": {"attention": {"block": "t5_self"}, "cross": {"block": "t5_cross"},
           "ffn": {"block": "t5_ff"}},
    "mpnet": {"attention": {"block": "mpnet_attention"},
              "ffn": {"intermediate": "bert_intermediate", "output": "bert_output"}},
}

# Layers of these families can be deleted from their ModuleList (the config's layer count then
# describes the model); T5's first block owns the position bias, so T5 skips sublayers instead.
DROPPABLE_LAYERS = {"llama": True, "bert": True, "t5": False}
