"""APT with its frozen backbone stored in 16 bits (apt.frozen_dtype)."""
from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from lmprune.config.train_schema import APTConfig
from lmprune.training.apt import APTMethod
from lmprune.training.loop import Clock, LoopSettings, run_loop
from lmprune.tuners.frozen_storage import stored_modules
from lmprune.zoo import build_tiny

from apt_toys import collate, features

pytestmark = pytest.mark.usefixtures("one_thread")


@torch.no_grad()
def _round_frozen(model: nn.Module, dtype=torch.float16, kinds=(nn.Linear, nn.Embedding)
                  ) -> None:
    for m in model.modules():
        if type(m) in kinds and not m.weight.requires_grad:
            m.weight.copy_(m.weight.to(dtype).to(m.weight.dtype))


def _train(frozen: str, round_first: bool = False, mixed_precision: str = "no", **cfg):
    config = APTConfig(prune_start=2, prune_stop_epochs=3, events=4, round_to=1,
                       targets=["q", "v", "ffn_up"], frozen_dtype=frozen,
                       **{"teacher": "start", "distill_epochs": 100, **cfg})
    assert not config.validate()
    method = APTMethod(config, keep=0.4, total_steps=24, steps_per_epoch=4,
                       mixed_precision=mixed_precision)
    torch.manual_seed(0)  # the distillation transform draws from the global generator
    # float32: the salience reads the weights in float32 at least, so a float64 model would
    # score its float16-stored weights in lower precision than the reference's
    model = build_tiny("tiny-bert", "sequence-classification")
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    model = method.setup(model)
    if round_first == "bf16-linears":  # what autocast rounds the frozen linears to
        _round_frozen(model, torch.bfloat16, (nn.Linear,))
    elif round_first:
        _round_frozen(model)
    feats = features(model.config.vocab_size)
    result = run_loop(model, method, feats, collate,
                      LoopSettings(24, 8, 2e-3, eval_every=4, progress=False,
                                   mixed_precision=mixed_precision),
                      Accelerator(cpu=True), Clock())
    return model, method, result, feats


@pytest.mark.parametrize("teacher_dtype", ["model", "bfloat16"])
def test_apt_with_stored_weights_trains_as_the_rounded_model_does(teacher_dtype):
    stored, s_method, s_result, feats = _train("float16", teacher_dtype=teacher_dtype)
    ref, r_method, r_result, _ = _train("model", round_first=True, teacher_dtype=teacher_dtype)
    assert s_method.frozen_saved > 0 and r_method.frozen_saved == 0
    assert s_method.compactions and s_method.teacher.copy_dtype is not None
    assert s_result.losses == pytest.approx(r_result.losses, rel=1e-9, abs=1e-12)
    assert [e["kept"] for e in s_method.log] == [e["kept"] for e in r_method.log]
    # finish leaves plain modules in the model's dtype, with the same weights
    s_model, r_model = s_method.finish(stored), r_method.finish(ref)
    assert not stored_modules(s_model)
    assert {p.dtype for p in s_model.parameters()} == {torch.float32}
    s_state, r_state = s_model.state_dict(), r_model.state_dict()
    assert s_state.keys() == r_state.keys()
    for name in s_state:
        torch.testing.assert_close(s_state[name], r_state[name], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("frozen", ["float16", "bfloat16"])
def test_the_frozen_weights_are_stored_in_sixteen_bits_while_training(frozen):
    model, method, _, _ = _train(frozen, teacher_dtype="model", distill_epochs=None)
    stored = stored_modules(model)
    assert stored and {m.weight.dtype for m in stored.values()} == {getattr(torch, frozen)}
    tiny = build_tiny("tiny-bert", "sequence-classification")
    frozen_numbers = sum(m.weight.numel() for n, m in tiny.named_modules()
                         if type(m) in (nn.Linear, nn.Embedding)
                         and "classifier" not in n and "pooler" not in n)  # the heads train
    assert method.frozen_saved == 2 * frozen_numbers  # 4 -> 2 bytes each, before pruning
    assert method.summary()["frozen_bytes_saved"] == method.frozen_saved
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and {p.dtype for p in trainable} == {torch.float32}


def test_under_autocast_the_linears_are_stored_as_autocast_computes_them():
    """apt.frozen_dtype=autocast (the default) with train.mixed_precision=bf16: frozen
    linears in bfloat16, embeddings not; every step's loss equal to the model's-dtype run
    whose frozen linears were rounded to bfloat16 first (what autocast multiplies with)."""
    stored, s_method, s_result, _ = _train("autocast", mixed_precision="bf16")
    ref, r_method, r_result, _ = _train("model", round_first="bf16-linears",
                                        mixed_precision="bf16")
    kinds = {type(m).__name__: m.weight.dtype for m in stored_modules(stored).values()}
    assert kinds == {"StoredLinear": torch.bfloat16}  # no StoredEmbedding
    assert s_method.frozen_saved > 0 and r_method.frozen_saved == 0
    assert any(n.startswith("frozen weights stored in bfloat16 (apt.frozen_dtype=autocast)")
               for n in s_method.summary()["notes"])
    assert s_result.losses == r_result.losses  # bit for bit
    assert [e["kept"] for e in s_method.log] == [e["kept"] for e in r_method.log]
    s_model, r_model = s_method.finish(stored), r_method.finish(ref)
    s_state, r_state = s_model.state_dict(), r_model.state_dict()
    for name in s_state:
        assert torch.equal(s_state[name], r_state[name]), name


def test_without_autocast_the_autocast_setting_keeps_the_model_dtype():
    _, method, _, _ = _train("autocast", teacher_dtype="model", distill_epochs=None)
    assert method.frozen_saved == 0
