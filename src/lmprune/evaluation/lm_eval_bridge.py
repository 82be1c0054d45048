"""Bridge to lm-evaluation-harness: wrap a (pruned) model in ``HFLM``, measure perplexity.

``rolling_perplexity`` issues the same ``loglikelihood_rolling`` requests lm-eval's wikitext
task does, so its numbers are what ``lm_eval --tasks wikitext`` would report on these texts:
word perplexity and bits per byte exactly as lm-eval aggregates them, plus token perplexity.
``lm_eval`` is imported inside the functions: importing lmprune stays fast.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any


def _is_remote_code_dir(path: Path) -> bool:
    """True for a directory saved by lmprune in remote-code format."""
    config = path / "config.json"
    if not config.is_file():
        return False
    return bool(json.loads(config.read_text()).get("lmprune_structure"))


def make_hflm(model_or_path: Any, tokenizer: Any = None, *, batch_size: int = 1,
              max_length: int | None = None, device: str = "cpu",
              trust_remote_code: bool | None = None, **kwargs: Any):
    """An ``lm_eval.models.huggingface.HFLM`` for an in-memory model or a saved directory.

    ``model_or_path``: a ``PreTrainedModel`` (evaluated where it is; ``device`` is ignored, as
    HFLM ignores it for model objects) or a directory / hub id. A directory saved in lmprune's
    remote-code format (``config.json`` has ``lmprune_structure``) gets
    ``trust_remote_code=True`` unless ``trust_remote_code`` is given. ``tokenizer``: an object
    or a path; None means the model's own (its directory, or ``model.name_or_path``).
    ``max_length``: the rolling window in tokens (None: HFLM's default from the config).
    Extra keyword arguments go to ``HFLM``.
    """
    from lm_eval.models.huggingface import HFLM

    if isinstance(model_or_path, (str, Path)):
        path = str(model_or_path)
        if trust_remote_code is None:
            trust_remote_code = Path(path).is_dir() and _is_remote_code_dir(Path(path))
        return HFLM(pretrained=path, tokenizer=tokenizer, batch_size=batch_size,
                    max_length=max_length, device=device,
                    trust_remote_code=bool(trust_remote_code), **kwargs)
    model = model_or_path.eval()
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
                max_length=max_length, trust_remote_code=bool(trust_remote_code), **kwargs)


def _count_words(text: str) -> int:
    return len(re.split(r"\s+", text))  # lm-eval's Task.count_words


def rolling_perplexity(hflm, texts: list[str], *, disable_tqdm: bool = True) -> dict:
    """Perplexity of ``hflm`` on ``texts`` (one document each), as lm-eval computes it.

    Each text is one ``loglikelihood_rolling`` request: lm-eval tokenizes it, cuts it into
    windows of ``hflm.max_length`` tokens that score disjoint spans (the first conditioned on
    the prefix token; later ones keep the preceding tokens as context)
    and sums the log-likelihood of every token. Returns:

    * ``word_perplexity``: exp(-sum loglik / words), words = whitespace-split count (lm-eval);
    * ``token_perplexity``: exp(-sum loglik / tokens), tokens = the tokens scored, as encoded
      by the model's tokenizer (``hflm.tok_encode``);
    * ``bits_per_byte``: -sum loglik / UTF-8 bytes / ln 2 (lm-eval);
    * ``loglikelihood`` (the sum), ``tokens``, ``words``, ``bytes``, ``documents``, ``protocol``.
    """
    from lm_eval import __version__ as lm_eval_version
    from lm_eval.api.instance import Instance

    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("rolling_perplexity needs at least one non-empty text")
    requests = [Instance(request_type="loglikelihood_rolling", doc={"page": text},
                         arguments=(text,), idx=0, metadata=("lmprune_rolling", i, 1))
                for i, text in enumerate(texts)]
    logliks = hflm.loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)
    total = float(sum(logliks))
    tokens = sum(len(hflm.tok_encode(text)) for text in texts)
    words = sum(_count_words(text) for text in texts)
    n_bytes = sum(len(text.encode("utf-8")) for text in texts)
    protocol = (f"lm-eval {lm_eval_version} HFLM loglikelihood_rolling: {len(texts)} documents, "
                f"windows of max_length={hflm.max_length} tokens scoring disjoint spans (the first "
                f"conditioned on prefix token {hflm.prefix_token_id}), batch_size={hflm.batch_size}; "
                "word perplexity and bits/byte aggregated as lm-eval's wikitext task")
    return {
        "word_perplexity": math.exp(-total / words),
        "token_perplexity": math.exp(-total / tokens),
        "bits_per_byte": -total / n_bytes / math.log(2),
        "loglikelihood": total,
        "tokens": tokens,
        "words": words,
        "bytes": n_bytes,
        "documents": len(texts),
        "protocol": protocol,
    }
