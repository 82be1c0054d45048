"""Frozen weights stored in 16 bits, computed in the model's dtype (frozen_storage.py)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lmprune.errors import LmpruneError
from lmprune.tuners import apply_apt
from lmprune.tuners.frozen_storage import (StoredEmbedding, StoredLinear, restore_frozen,
                                           storage_dtype, store_frozen, stored_modules)
from lmprune.zoo import build_tiny

TASKS = {"tiny-bert": "sequence-classification", "tiny-mpnet": "sequence-classification",
         "tiny-llama": "sequence-classification", "tiny-t5": "seq2seq-lm"}


def _adapted(name: str, dtype=torch.float64):
    model = build_tiny(name, TASKS[name]).to(dtype)
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    if name == "tiny-llama":
        model.config.pad_token_id = 0
    apply_apt(model, ["q", "v"], generator=torch.Generator().manual_seed(0))
    for module in model.modules():  # non-zero B, so the adapters' outputs count
        if hasattr(module, "lora_B"):
            nn.init.normal_(module.lora_B, std=0.1, generator=torch.Generator().manual_seed(1))
    head = model.classifier if hasattr(model, "classifier") else getattr(model, "score", None)
    if head is not None:
        head.requires_grad_(True)
    return model


def _rounded(model, dtype=torch.float16):
    """A copy whose frozen linear/embedding weights hold their ``dtype``-rounded values."""
    ref = copy.deepcopy(model)
    keep = set(getattr(ref, "_keep_in_fp32_modules", None) or ())
    with torch.no_grad():
        for name, m in ref.named_modules():
            if type(m) in (nn.Linear, nn.Embedding) and not m.weight.requires_grad \
                    and not keep & set(name.split(".")):
                m.weight.copy_(m.weight.to(dtype).to(m.weight.dtype))
    return ref


def _batch(name: str):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 60, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    batch["labels"] = ids[:, :4].contiguous() if name == "tiny-t5" else torch.tensor([0, 1, 1])
    return batch


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                 if p.requires_grad}


@pytest.mark.parametrize("name", list(TASKS))
def test_stored_weights_compute_what_the_rounded_model_computes(name):
    model = _adapted(name)
    ref = _rounded(model)
    assert store_frozen(model, torch.float16) > 0
    batch = _batch(name)
    logits, grads = _loss_and_grads(model, batch)
    ref_logits, ref_grads = _loss_and_grads(ref, batch)
    assert logits.dtype == torch.float64
    torch.testing.assert_close(logits, ref_logits, rtol=1e-12, atol=1e-12)
    assert grads.keys() == ref_grads.keys() and any("lora_A" in n for n in grads)
    for n in grads:
        torch.testing.assert_close(grads[n], ref_grads[n], rtol=1e-10, atol=1e-12)
    # the rounding is real: the unrounded model computes something else
    plain_logits, _ = _loss_and_grads(_adapted(name), batch)
    assert not torch.equal(plain_logits, logits)


def test_only_frozen_linear_and_embedding_weights_are_stored_and_bytes_add_up():
    model = _adapted("tiny-bert", torch.float32)
    frozen = {n: m.weight for n, m in model.named_modules()
              if type(m) in (nn.Linear, nn.Embedding) and not m.weight.requires_grad}
    expected = sum(w.numel() * 2 for w in frozen.values())  # 4 -> 2 bytes each
    assert store_frozen(model, torch.float16) == expected
    assert set(stored_modules(model)) == set(frozen)
    for name, p in model.named_parameters():
        stored = name.rsplit(".", 1)[0] in frozen and name.endswith("weight")
        assert p.dtype == (torch.float16 if stored else torch.float32), name
    assert isinstance(model.classifier, nn.Linear) and type(model.classifier) is nn.Linear
    assert all(isinstance(m, (nn.Linear, nn.Embedding)) for m in stored_modules(model).values())


def test_backward_keeps_the_sixteen_bit_weight_not_a_float32_copy():
    model = _adapted("tiny-bert", torch.float32)
    store_frozen(model, torch.float16)
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        model(**_batch("tiny-bert")).loss.backward()
    weight_shapes = {tuple(m.weight.shape) for m in stored_modules(model).values()}
    as_float = [t for t in kept if t.dtype == torch.float32 and t.dim() == 2
                and tuple(t.shape) in weight_shapes]
    as_half = [t for t in kept if t.dtype == torch.float16]
    assert not as_float, [tuple(t.shape) for t in as_float]
    assert as_half  # the stored weights themselves


def test_restore_gives_plain_modules_in_the_asked_dtype():
    model = _adapted("tiny-bert", torch.float32)
    ref = _rounded(model)
    store_frozen(model, torch.float16)
    count = len(stored_modules(model))
    assert restore_frozen(model, torch.float32) == count
    assert not stored_modules(model)
    assert {type(m) for m in model.modules()} & {StoredLinear, StoredEmbedding} == set()
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    for (name, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name


def test_tied_embeddings_are_stored_once_and_t5s_kept_modules_are_left_alone():
    model = _adapted("tiny-t5", torch.float32)
    assert model.lm_head.weight is model.shared.weight
    store_frozen(model, torch.float16)
    assert model.lm_head.weight is model.shared.weight
    assert model.shared.weight.dtype == torch.float16
    assert type(model.lm_head) is StoredLinear and type(model.shared) is StoredEmbedding
    wo = [m for n, m in model.named_modules() if n.endswith(".wo")]
    assert wo and all(type(m) is nn.Linear and m.weight.dtype == torch.float32 for m in wo)


def test_a_weight_outside_float16s_range_is_left_as_it_is():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)).requires_grad_(False)
    with torch.no_grad():
        model[1].weight[0, 0] = 1e6
    store_frozen(model, torch.float16)
    assert type(model[0]) is StoredLinear and type(model[1]) is nn.Linear
    assert model[1].weight.dtype == torch.float32
    store_frozen(model, torch.bfloat16)  # float32's range: stored (model[0] already is)
    assert model[1].weight.dtype == torch.bfloat16 and model[0].weight.dtype == torch.float16


def test_a_stored_linear_refuses_to_train_its_weight():
    layer = nn.Linear(4, 3).requires_grad_(False)
    store_frozen(layer, torch.float16)
    layer.weight.requires_grad_(True)
    with pytest.raises(LmpruneError, match="frozen"):
        layer(torch.randn(2, 4))


def test_the_storage_table():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert storage_dtype("model", torch.float32, gpu) is None
    assert storage_dtype("auto", torch.float32, cpu) is None
    assert storage_dtype("auto", torch.float32, gpu) == torch.float16
    assert storage_dtype("auto", torch.bfloat16, gpu) is None  # already 16 bits
    assert storage_dtype("float16", torch.float64, cpu) == torch.float16
    assert storage_dtype("bfloat16", torch.float32, cpu) == torch.bfloat16
    assert storage_dtype("autocast", torch.float32, gpu) is None  # training without autocast
    assert storage_dtype("autocast", torch.float32, cpu, torch.bfloat16) == torch.bfloat16
    assert storage_dtype("autocast", torch.bfloat16, gpu, torch.bfloat16) is None
    with pytest.raises(LmpruneError, match="float16"):
        storage_dtype("int8", torch.float32, cpu)
    assert store_frozen(nn.Linear(2, 2), None) == 0
