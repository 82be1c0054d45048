"""recover() end to end on tiny models: learning, saving, reloading, resuming, settings."""
from __future__ import annotations

import json

import pytest
import torch
from recovery_helpers import FAST, ROWS, logits, tiny_run

import lmprune
from lmprune.errors import LmpruneError
from lmprune.recovery import build_examples, recover
from lmprune.recovery import loop as loop_module
from lmprune.recovery.checkpoint import CheckpointError
from lmprune.recovery.loop import TrainSettings, batch_indices, lr_factor
from lmprune.structures.plan import PruningPlan
from lmprune.zoo import build_tiny

TEXT = "Count: to three. one two three"


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, worst


def test_loss_decreases_and_the_report_says_what_happened(tmp_path, tokenizer):
    model = build_tiny("tiny-llama", "causal-lm")
    run = tiny_run("recovery.max_steps=12")
    result = recover(model, tokenizer, run, tmp_path / "out", data=ROWS, source="tiny", **FAST)
    assert result.steps == 12 and len(result.losses) == 12
    assert sum(result.losses[-3:]) / 3 < result.losses[0] - 0.3  # ln(128) = 4.85 at the start
    report = json.loads((tmp_path / "out" / "recovery.json").read_text())
    assert report["loss"] == result.losses and report["steps"] == 12
    assert report["params"]["trainable"] == result.trainable_params == 14336  # 2 x 7168
    assert report["config"]["r"] == 8 and report["settings"]["micro_batch"] == 2
    assert report["examples"] == 16 and report["dropped_examples"] == 0
    examples, _ = build_examples(tokenizer, ROWS, max_len=64, template="plain")
    assert report["tokens_trained"] == 3 * sum(e.num_targets for e in examples)  # 3 epochs
    assert report["model"] == "tiny" and report["save_format"] == "stock"
    png = (tmp_path / "out" / "loss_curve.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert (tmp_path / "out" / "checkpoints" / "step-0000012" / "adapter.pt").exists()


def test_saved_pruned_model_reloads_with_the_same_logits(tmp_path, pruned_dir, tokenizer):
    model = lmprune.load_pretrained(pruned_dir)
    before = logits(model, TEXT, tokenizer)
    result = recover(model, tokenizer, tiny_run(), tmp_path / "out", data=ROWS,
                     plan=PruningPlan.load(pruned_dir), **FAST)
    assert result.save_format == "remote-code"  # like its input
    merged = logits(result.model, TEXT, tokenizer)
    assert (merged - before).abs().max() > 1e-4  # training changed the function
    again = lmprune.load_pretrained(tmp_path / "out")
    assert (logits(again, TEXT, tokenizer) - merged).abs().max() <= 1e-5
    plan = PruningPlan.load(tmp_path / "out")
    assert plan.removed == {"attention": ["layers.0.attn"]}
    assert plan.meta["method"] == "manual" and plan.meta["recovery"]["steps"] == 4


def test_resume_after_a_crash_gives_the_uninterrupted_weights(tmp_path, tokenizer, monkeypatch):
    run = tiny_run("recovery.max_steps=6", "recovery.dropout=0.1")  # dropout: RNG restored too
    options = dict(FAST, checkpoint_every=3)
    full = recover(build_tiny("tiny-llama", "causal-lm"), tokenizer, run, tmp_path / "full",
                   data=ROWS, **options)

    real_step, calls = loop_module._step, []

    def crash_at_step_5(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("simulated crash")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop_module, "_step", crash_at_step_5)
    out = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        recover(build_tiny("tiny-llama", "causal-lm"), tokenizer, run, out, data=ROWS, **options)
    monkeypatch.undo()
    assert [p.name for p in out.iterdir()] == ["checkpoints"]  # nothing half-written
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-0000003"]

    with pytest.raises(LmpruneError, match="--resume"):
        recover(build_tiny("tiny-llama", "causal-lm"), tokenizer, run, out, data=ROWS, **options)
    changed = tiny_run("recovery.max_steps=6", "recovery.dropout=0.1", "recovery.lr=1e-3")
    with pytest.raises(CheckpointError, match="lr: checkpoint 0.005, now 0.001"):
        recover(build_tiny("tiny-llama", "causal-lm"), tokenizer, changed, out, data=ROWS,
                resume=True, **options)

    resumed = recover(build_tiny("tiny-llama", "causal-lm"), tokenizer, run, out, data=ROWS,
                      resume=True, **options)
    assert resumed.resumed_from == 3 and resumed.steps == 6
    assert resumed.losses == full.losses
    assert_same_weights(weights(resumed.model), weights(full.model))
    with pytest.raises(LmpruneError, match="finished recovery run"):
        recover(build_tiny("tiny-llama", "causal-lm"), tokenizer, run, out, data=ROWS,
                resume=True, **options)


def test_micro_batches_and_accumulation_give_the_full_batch_gradient(tmp_path, tokenizer):
    run = tiny_run("recovery.max_steps=3")
    results = [recover(build_tiny("tiny-llama", "causal-lm"), tokenizer, run, tmp_path / str(mb),
                       data=ROWS, **dict(FAST, micro_batch=mb)) for mb in (1, 4)]
    assert results[0].losses == pytest.approx(results[1].losses, rel=1e-5)
    assert_same_weights(weights(results[0].model), weights(results[1].model), atol=1e-5)


def test_seed_decides_the_run(tmp_path, tokenizer):
    def losses(seed: int, name: str) -> list[float]:
        run = tiny_run("recovery.max_steps=2", f"seed={seed}")
        return recover(build_tiny("tiny-llama", "causal-lm"), tokenizer, run, tmp_path / name,
                       data=ROWS, **FAST).losses

    first = losses(1, "a")
    assert losses(1, "b") == first
    assert losses(2, "c") != first


def test_epochs_decide_the_steps_without_max_steps(tmp_path, tokenizer):
    run = tiny_run("recovery.max_steps=null", "recovery.epochs=0.5")  # 16 rows / 4 per step
    result = recover(build_tiny("tiny-llama", "causal-lm"), tokenizer, run, tmp_path / "out",
                     data=ROWS, **FAST)
    assert result.steps == 2


def test_schedule_and_data_order():
    # warmup 2 of 10 steps, then linear decay to the last step
    assert [lr_factor(s, 10, 2) for s in range(10)] == [0.5, 1.0, 1.0, 0.875, 0.75, 0.625,
                                                         0.5, 0.375, 0.25, 0.125]
    settings = TrainSettings(lr=1e-4, epochs=2, batch_size=8, micro_batch=4, max_steps=None,
                             warmup_steps=100, checkpoint_every=200, seed=0)
    assert settings.total_steps(50) == 14 and settings.warmup(14) == 1  # 100 capped at 10%
    epoch0 = [i for s in range(7) for i in batch_indices(s, 50, 8, seed=0)]
    epoch1 = [i for s in range(7, 14) for i in batch_indices(s, 50, 8, seed=0)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(50)) and epoch0 != epoch1
    assert batch_indices(3, 50, 8, seed=0) == batch_indices(3, 50, 8, seed=0)


def test_output_directory_rules(tmp_path, tokenizer):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(LmpruneError, match="not empty.*output.overwrite=true"):
        recover(build_tiny("tiny-llama", "causal-lm"), tokenizer, tiny_run(), out, data=ROWS,
                **FAST)
    run = tiny_run("output.overwrite=true", "recovery.max_steps=1")
    recover(build_tiny("tiny-llama", "causal-lm"), tokenizer, run, out, data=ROWS, **FAST)
    assert not (out / "notes.txt").exists() and (out / "recovery.json").exists()
