"""A compiled forward of an unpadded batch runs SDPA without a mask (the fused kernels); a
padded batch keeps its mask; outputs equal eager either way and the model is left as it was."""
from __future__ import annotations

import pytest
import torch

from lmprune.evaluation.compiled import CompiledForward
from lmprune.evaluation.unpadded import NAME, drop_all_ones_mask, unpadded_sdpa
from lmprune.zoo.tiny import build_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


class _SdpaMasks:
    """A torch.compile backend that records the ``attn_mask`` of every SDPA call it compiles
    (None, or the name of the graph node feeding it) and runs the graph as traced."""

    def __init__(self):
        self.masks: list = []

    def __call__(self, gm, example_inputs):
        for node in gm.graph.nodes:
            if "scaled_dot_product" in str(node.target):
                mask = node.kwargs.get("attn_mask", node.args[3] if len(node.args) > 3 else None)
                self.masks.append(None if mask is None else str(mask))
        return gm.forward


def _inputs(model, batch=3, seq=12, pad_last=0):
    ids = torch.randint(5, model.config.vocab_size, (batch, seq),
                        generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    if pad_last:
        mask[-1, -pad_last:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _compiled(model, backend, unpadded=True):
    fast = CompiledForward(model, "default", unpadded=unpadded)
    fast._compiled = torch.compile(model, backend=backend, dynamic=False)
    return fast


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-roberta"])
def test_unpadded_batch_compiles_sdpa_without_a_mask_and_gives_eager_outputs(name):
    torch._dynamo.reset()
    model = build_tiny(name, "sequence-classification")
    inputs = _inputs(model)
    with torch.inference_mode():
        eager = model(**inputs).logits.clone()
        plain, fixed = _SdpaMasks(), _SdpaMasks()
        _compiled(model, plain, unpadded=False)(**inputs)
        torch._dynamo.reset()
        out = _compiled(model, fixed)(**inputs).logits.clone()
    assert plain.masks and all(m is not None for m in plain.masks)  # what compile does alone
    assert fixed.masks and all(m is None for m in fixed.masks)
    torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-5)
    assert model.config._attn_implementation == "sdpa"


def test_padded_batch_keeps_its_mask_and_its_outputs():
    torch._dynamo.reset()
    model = build_tiny("tiny-bert", "sequence-classification")
    inputs = _inputs(model, pad_last=4)
    with torch.inference_mode():
        eager = model(**inputs).logits.clone()
        seen = _SdpaMasks()
        out = _compiled(model, seen)(**inputs).logits.clone()
    assert seen.masks and all(m is not None for m in seen.masks)
    torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-5)


def test_causal_model_keeps_its_causal_mask():
    torch._dynamo.reset()
    model = build_tiny("tiny-llama", "causal-lm")
    inputs = _inputs(model, batch=2, seq=10)
    with torch.inference_mode():
        eager = model(**inputs).logits.clone()
        inputs["attention_mask"][0, :3] = 0  # left padding: the mask must matter
        eager_padded = model(**inputs).logits.clone()
        inputs["attention_mask"][0, :3] = 1
        fast = CompiledForward(model, "default")
        out = fast(**inputs).logits.clone()
        inputs["attention_mask"][0, :3] = 0
        out_padded = fast(**inputs).logits.clone()
    torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out_padded[1], eager_padded[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out_padded[0, 3:], eager_padded[0, 3:], rtol=1e-4, atol=1e-5)


def test_switch_is_scoped_to_the_call_and_only_for_sdpa_models():
    model = build_tiny("tiny-bert", "sequence-classification")
    inputs = _inputs(model)
    with unpadded_sdpa(model, inputs) as used:
        assert "attention_mask" not in used and model.config._attn_implementation == NAME
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(RuntimeError), unpadded_sdpa(model, inputs):
        raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"  # restored after a failure too
    model.config._attn_implementation = "eager"
    with unpadded_sdpa(model, inputs) as used:
        assert used is inputs and model.config._attn_implementation == "eager"


def test_drop_all_ones_mask_only_drops_masks_that_mask_nothing():
    ids = torch.ones(2, 3, dtype=torch.long)
    assert drop_all_ones_mask({"input_ids": ids, "attention_mask": torch.ones(2, 3)}) == {
        "input_ids": ids}
    padded = {"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 0], [1, 1, 1]])}
    assert drop_all_ones_mask(padded) is padded
    assert drop_all_ones_mask({"input_ids": ids}) == {"input_ids": ids}
