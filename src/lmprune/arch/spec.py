"""The vocabulary of prunable sites shared by every method.

A *site* is one place in the network that holds groups of one kind: an attention block holds
heads (and key/value groups), an FFN block holds neurons, a layer holds its sublayers, and the
model has one hidden (residual) channel set shared by every layer. All paths are dotted module
names relative to the top-level model, so a site can be resolved with ``model.get_submodule``.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AttentionSite:
    """One attention block (T5: encoder self, decoder self and decoder cross are separate)."""

    name: str  # e.g. "layers.3.attn", "encoder.1.self", "decoder.1.cross"
    layer: str  # name of the LayerSite that owns it
    q: str
    k: str
    v: str
    o: str
    num_heads: int
    num_kv_heads: int
    head_dim: int
    block: str  # module replaced by a skip module when the whole sublayer is removed
    norm: str | None  # norm that only feeds this sublayer (pre-norm), removed with it
    post_norm: str | None = None  # norm after the residual add (BERT), kept on removal
    position_bias: bool = False  # T5: owns the relative position bias of its stack
    # T5, MPNet: the scores get a position bias computed over all original heads; removal
    # records the kept heads (``lmprune_kept_heads``) so the site takes its own slice of it
    shared_position_bias: bool = False

    @property
    def group_size(self) -> int:
        """Query heads per key/value group (1 for multi-head attention)."""
        return self.num_heads // self.num_kv_heads


@dataclass(frozen=True)
class FFNSite:
    """One feed-forward block: ``ins`` produce the intermediate neurons, ``out`` reads them."""

    name: str  # e.g. "layers.3.ffn"
    layer: str
    ins: tuple[str, ...]  # gate/up (SwiGLU), wi_0/wi_1 (gated T5), intermediate.dense (BERT)
    out: str
    width: int
    block: str
    norm: str | None
    post_norm: str | None = None


@dataclass(frozen=True)
class LayerSite:
    """One transformer layer of a stack (a ModuleList entry)."""

    name: str  # e.g. "layers.3", "encoder.1"
    stack: str  # path of the ModuleList, e.g. "model.layers"
    index: int
    attention: tuple[str, ...]  # AttentionSite names
    ffn: tuple[str, ...]  # FFNSite names


@dataclass(frozen=True)
class HiddenSite:
    """The residual stream: every tensor that has a hidden-size dimension.

    ``entries`` are modules whose output enters the residual stream directly (masked on output);
    ``embeddings`` have their columns sliced on removal; ``norms`` normalise over the hidden
    size (under a hidden mask they use statistics of the kept channels only, which is what the
    physically pruned norm computes); ``readers`` are linears with hidden-size inputs,
    ``writers`` linears with hidden-size outputs.
    """

    size: int
    entries: tuple[str, ...]
    embeddings: tuple[str, ...]
    norms: tuple[str, ...]
    readers: tuple[str, ...]
    writers: tuple[str, ...]


@dataclass(frozen=True)
class ModelStructure:
    """Everything masks, removal, counting and export need to know about one model."""

    model_type: str
    family: str
    attention: tuple[AttentionSite, ...]
    ffn: tuple[FFNSite, ...]
    layers: tuple[LayerSite, ...]
    hidden: HiddenSite
    embedding_params: tuple[str, ...] = ()  # parameter names counted as embeddings
    head_modules: tuple[str, ...] = ()  # task heads (lm_head, classifier, pooler, ...)
    extra: dict = field(default_factory=dict)

    def attention_site(self, name: str) -> AttentionSite:
        return _find(self.attention, name, "attention site")

    def ffn_site(self, name: str) -> FFNSite:
        return _find(self.ffn, name, "FFN site")

    def layer_site(self, name: str) -> LayerSite:
        return _find(self.layers, name, "layer")


def _find(sites, name, what):
    for site in sites:
        if site.name == name:
            return site
    from lmprune.errors import MaskError

    raise MaskError(f"no {what} named {name!r}; valid: {', '.join(s.name for s in sites)}")
