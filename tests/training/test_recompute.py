"""``train.gradient_checkpointing``: a step recomputes each layer's activations in backward and
computes what it computed without (losses step by step, APT's pruning decisions, the final
model), with dropout too; PEFT models are reached through their wrapper; an architecture
without transformers' checkpointing is refused, from the CLI before training starts."""
from __future__ import annotations

import json

import pytest
import torch
from accelerate import Accelerator

from lmprune.cli.main import main
from lmprune.config.train_schema import APTConfig
from lmprune.errors import LmpruneError
from lmprune.training.apt import APTMethod
from lmprune.training.loop import Clock, LoopSettings, run_loop
from lmprune.training.method import LoRAMethod, TrainMethod
from lmprune.training.recompute import enable_recompute, recomputing, supports_recompute
from lmprune.zoo import build_tiny

from apt_toys import collate, features, float64_model

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 16


def _layer_calls(model) -> list:
    """Record each call of the attention inside the model's first transformer layer, in the
    forward and in its recomputation (transformers checkpoints a layer's ``forward``, so the
    layer's own hooks stay outside; its children's run again)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    calls: list = []
    layer = next(m for m in model.modules() if isinstance(m, GradientCheckpointingLayer))
    attention = next(m for m in layer.modules() if "Attention" in type(m).__name__)
    attention.register_forward_pre_hook(lambda *args: calls.append(torch.is_grad_enabled()))
    return calls


def _train(model, method, recompute: bool, steps: int = STEPS, seed: int = 1,
           precision: str = "no"):
    torch.manual_seed(seed)
    feats = features(model.config.vocab_size, seq2seq=model.config.model_type == "t5")
    result = run_loop(model, method, feats, collate,
                      LoopSettings(steps, 8, 2e-3, eval_every=4, progress=False,
                                   mixed_precision=precision, gradient_checkpointing=recompute),
                      Accelerator(cpu=True), Clock())
    return result, feats


def _logits(model, feats):
    model.eval()
    with torch.no_grad():
        return model(**collate(feats[:6])).logits


def _apt(name: str):
    config = APTConfig(prune_start=2, prune_stop_epochs=2, events=3, round_to=1,
                       targets=["q", "v"] if name != "tiny-bert" else ["q", "v", "ffn_up"],
                       structures=["heads", "neurons", "hidden"])
    assert not config.validate()
    return APTMethod(config, keep=0.4, total_steps=STEPS, steps_per_epoch=4)


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-llama", "tiny-t5"])
def test_apt_with_recomputation_equals_apt_without(name):
    plain_method = _apt(name)
    plain = plain_method.setup(float64_model(name))
    plain_calls = _layer_calls(plain)
    p_result, feats = _train(plain, plain_method, False)
    re_method = _apt(name)
    recomputed = re_method.setup(float64_model(name))
    calls = _layer_calls(recomputed)
    r_result, _ = _train(recomputed, re_method, True)
    assert not recomputing(recomputed)  # switched off again when training ends
    # each training forward runs once more in backward; the teacher's (no gradient) do not
    assert calls.count(True) == 2 * plain_calls.count(True) > 0
    assert calls.count(False) == plain_calls.count(False)
    assert re_method.compactions, "nothing was compacted"
    assert torch.allclose(torch.tensor(r_result.losses), torch.tensor(p_result.losses),
                          rtol=1e-7, atol=1e-10)
    assert [e["kept"] for e in re_method.log] == [e["kept"] for e in plain_method.log]
    got = _logits(re_method.finish(recomputed), feats)
    expected = _logits(plain_method.finish(plain), feats)
    assert torch.allclose(got, expected, rtol=1e-7, atol=1e-10)


def test_full_fine_tuning_with_dropout_recomputes_the_same_masks():
    p_result, _ = _train(float64_model("tiny-bert", dropout=True), TrainMethod(), False, steps=6)
    r_result, _ = _train(float64_model("tiny-bert", dropout=True), TrainMethod(), True, steps=6)
    assert r_result.losses == pytest.approx(p_result.losses, rel=1e-9, abs=1e-12)
    # and dropout did draw: other random numbers give other losses
    o_result, _ = _train(float64_model("tiny-bert", dropout=True), TrainMethod(), True,
                         steps=6, seed=5)
    assert o_result.losses[1:] != pytest.approx(p_result.losses[1:], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("method", ["ft", "apt"])
def test_bf16_autocast_is_replayed_in_the_recomputed_forward(method):
    """Float32 weights, bfloat16 autocast: the recomputed pass computes in bfloat16 too."""
    def run(recompute):
        torch.manual_seed(0)
        model = build_tiny("tiny-bert", "sequence-classification")
        trainer = TrainMethod() if method == "ft" else _apt("tiny-bert")
        model = trainer.setup(model) if method == "apt" else model
        return _train(model, trainer, recompute, steps=12, precision="bf16")[0]

    plain, recomputed = run(False), run(True)
    assert recomputed.losses == pytest.approx(plain.losses, rel=1e-6, abs=1e-7)


def test_cofi_gates_see_the_same_masks_in_the_recomputed_forward():
    from lmprune.config.train_schema import CoFiConfig
    from lmprune.training.cofi import CoFiMethod

    def run(recompute):
        method = CoFiMethod(CoFiConfig(finetune_steps=2, reg_lr=0.05), sparsity=0.6,
                            total_steps=8)
        model = method.setup(float64_model("tiny-bert", dropout=True), None)
        result, _ = _train(model, method, recompute, steps=8)
        return result, {k: v.detach().clone() for k, v in method.gates.log_alpha.items()}

    (p_result, p_gates), (r_result, r_gates) = run(False), run(True)
    assert r_result.losses == pytest.approx(p_result.losses, rel=1e-9, abs=1e-12)
    assert p_gates.keys() == r_gates.keys()
    assert all(torch.allclose(r_gates[k], p_gates[k], rtol=1e-9, atol=1e-12) for k in p_gates)


def test_a_peft_model_is_checkpointed_through_its_wrapper():
    method = LoRAMethod(family="bert")
    plain = method.setup(float64_model("tiny-bert"), None)
    p_result, _ = _train(plain, method, False, steps=6)
    wrapped = method.setup(float64_model("tiny-bert"), None)
    calls = _layer_calls(wrapped)
    assert supports_recompute(wrapped)
    r_result, _ = _train(wrapped, method, True, steps=6)
    assert not recomputing(wrapped) and len(calls) == 2 * 6
    assert r_result.losses == pytest.approx(p_result.losses, rel=1e-9, abs=1e-12)


def test_an_architecture_without_checkpointing_is_refused():
    model = float64_model("tiny-mpnet")
    assert not supports_recompute(model)
    with pytest.raises(LmpruneError, match="no gradient checkpointing for 'mpnet'"):
        enable_recompute(model)
    with pytest.raises(LmpruneError, match="gradient_checkpointing"):
        _train(model, TrainMethod(), True, steps=2)


FAST = ["train.max_steps=4", "train.max_train_samples=32", "train.max_eval_samples=8",
        "train.eval_every=2", "train.measure=false", "train.progress=false",
        "apt.prune_start=1", "train.save_model=false"]


@pytest.mark.parametrize("method", ["apt", "cofi", "lora-prune-distill"])
def test_the_cli_trains_with_it(tmp_path, monkeypatch, capsys, method):
    import lmprune.training.loop as loop

    enabled = []
    original = loop.enable_recompute
    monkeypatch.setattr(loop, "enable_recompute",
                        lambda model: enabled.append(original(model) or recomputing(model)))
    out = tmp_path / method
    assert main(["train", "--method", method, "--model", "tiny-bert", "--task", "foods",
                 "--sparsity", "0.5", "--out", str(out), "--device", "cpu", *FAST,
                 "--gradient-checkpointing"]) == 0
    assert enabled and all(enabled)
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["metric"] <= 1.0
    assert "gradient checkpointing" in capsys.readouterr().out


def test_the_cli_refuses_it_for_mpnet_before_training(tmp_path, capsys):
    out = tmp_path / "mpnet"
    assert main(["train", "--method", "ft", "--model", "tiny-mpnet", "--task", "foods",
                 "--out", str(out), "--device", "cpu", *FAST,
                 "train.gradient_checkpointing=true"]) != 0
    err = capsys.readouterr().err
    assert "no gradient checkpointing for 'mpnet'" in err
    assert not (out / "metrics.json").exists()
