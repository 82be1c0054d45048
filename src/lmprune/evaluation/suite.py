"""Evaluate a causal LM as the run config says: parameters, perplexity, zero-shot, speed."""
from __future__ import annotations

from lmprune.structures.counting import count_parameters


def evaluate(model, tokenizer, eval_config, speed: bool | None = None, progress: bool = True) -> dict:
    """A dict with ``params``, ``perplexity`` per dataset, ``zero_shot`` per task, ``speed``."""
    from lmprune.data import load_dataset
    from lmprune.evaluation.perplexity import perplexity

    result: dict = {"params": count_parameters(model).as_dict()}
    result["params"].pop("per_layer", None)
    result["perplexity"] = {}
    for name in eval_config.perplexity:
        split = "test"
        texts = [t for t in load_dataset(name, split=split)["text"] if t.strip()]
        result["perplexity"][name] = perplexity(
            model, tokenizer, texts, seq_len=eval_config.seq_len,
            max_windows=eval_config.max_windows, progress=progress, dataset=f"{name}/{split}").as_dict()
    if eval_config.zero_shot:
        from lmprune.device import attention_for_varied_shapes
        from lmprune.evaluation.zeroshot import zero_shot

        # lm-eval batches requests of many lengths: no cuDNN attention (a plan per shape)
        with attention_for_varied_shapes(next(model.parameters()).device):
            result["zero_shot"] = zero_shot(model, tokenizer, list(eval_config.zero_shot),
                                            limit=eval_config.limit)
    if eval_config.speed if speed is None else speed:
        from lmprune.evaluation.speed import measure_speed

        result["speed"] = [r.as_dict() for r in measure_speed(
            model, eval_config.batch_sizes, eval_config.prompt_len, eval_config.new_tokens)]
    return result
