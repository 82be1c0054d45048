"""Fast generation for decoder LLMs: a static KV cache and a compiled decode step.

``fast_generate(model, input_ids, max_new_tokens)`` is the one-line entry point;
:mod:`.bench` measures prefill and decode throughput (``lmprune bench``).
"""
from lmprune.generation.fast import MODES, Decoder, fast_generate

__all__ = ["MODES", "Decoder", "fast_generate"]
