"""APT wired as a training method: the loop, pruning events, rank growth, finish."""
from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from lmprune.arch import describe
from lmprune.config.train_schema import APTConfig
from lmprune.structures.counting import count_parameters, head_cost, neuron_cost
from lmprune.training.apt import APTMethod
from lmprune.training.loop import Clock, LoopSettings, run_loop
from lmprune.tuners.apt_adapter import apt_modules
from lmprune.zoo import build_tiny

from apt_toys import collate, features

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = {"tiny-bert": "sequence-classification", "tiny-llama": "sequence-classification",
         "tiny-t5": "seq2seq-lm"}


def _model(name: str):
    torch.manual_seed(0)
    model = build_tiny(name, CASES[name])
    if name == "tiny-llama":
        model.config.pad_token_id = 0
    return model


def _train(name: str, keep: float = 0.4, steps: int = 24, **cfg):
    model = _model(name)
    defaults = dict(prune_start=2, prune_stop_epochs=3, events=4, round_to=1)
    defaults.update(cfg)
    targets = ["q", "v"] if name != "tiny-bert" else ["q", "v", "ffn_up"]
    config = APTConfig(targets=targets, **defaults)
    method = APTMethod(config, keep=keep, total_steps=steps, steps_per_epoch=4)
    model = method.setup(model)
    feats = features(model.config.vocab_size, seq2seq=name == "tiny-t5")
    run_loop(model, method, feats, collate, LoopSettings(steps, 8, 2e-3, progress=False),
             Accelerator(cpu=True), Clock())
    return model, method, feats


@pytest.mark.parametrize("name", list(CASES))
def test_finished_model_equals_masked_adapted_model(name):
    model, method, feats = _train(name)
    batch = collate(feats[:6])
    model.eval()
    with torch.no_grad(), method.active(model):
        expected = model(**batch).logits
    final = method.finish(model)
    assert not apt_modules(final)
    with torch.no_grad():
        got = final(**batch).logits
    assert torch.allclose(expected, got, atol=1e-5)


def test_budget_is_respected_and_masks_end_binary():
    dense = _model("tiny-bert")
    structure = describe(dense)
    units = sum(head_cost(dense, s)["head"] * s.num_heads for s in structure.attention)
    units += sum(neuron_cost(dense, s) * s.width for s in structure.ffn)
    model, method, _ = _train("tiny-bert", keep=0.4)
    for m in list(method.masks.heads.values()) + list(method.masks.neurons.values()):
        assert torch.all((m == 0) | (m == 1))
    final = method.finish(model)
    fixed = count_parameters(dense).body - units
    kept_units = count_parameters(final).body - fixed
    assert kept_units <= 0.4 * units
    assert kept_units >= 0.25 * units  # the search fills the budget, it does not over-prune


def test_rank_growth_adds_tuning_parameters_and_rebuilds_optimizer():
    model, method, _ = _train("tiny-bert", growth_factor=4.0)
    sizes = [e["adapter_params"] for e in method.log]
    assert sizes == sorted(sizes) and sizes[-1] > method.initial_adapter_params
    ranks = [a.rank for a in apt_modules(model).values()]
    assert max(ranks) > 8 and min(ranks) >= 8


def test_static_ranks_and_no_pruning_schedule():
    model, method, _ = _train("tiny-bert", rank_growth="static", schedule="none")
    assert method.events == [] and all(a.rank == 8 for a in apt_modules(model).values())
    dense_params = count_parameters(_model("tiny-bert")).body
    assert count_parameters(method.finish(model)).body == dense_params


@pytest.mark.parametrize("salience", ["magnitude", "fisher", "random"])
def test_salience_replacements_run(salience):
    model, method, _ = _train("tiny-bert", salience=salience, distill=False, steps=16)
    assert method.keep_ratio() <= 0.4 + 1e-6


def test_teacher_snapshot_and_pruning_window():
    _, method, _ = _train("tiny-bert")
    assert method.teacher_snapshots >= 1  # snapshot taken when pruning started
    assert method.start == 2 and method.stop == 12
    # distillation lasts the pruning window; then the teacher is freed
    assert method.distill_end == 12 and not method.teacher.ready
    assert method.distill_weight(11) == pytest.approx(0.9) and method.distill_weight(12) == 0.0


def test_teacher_is_the_best_model_seen_since_pruning_started():
    model, method, _ = _train("tiny-bert", teacher="best")
    first = method.teacher_snapshots
    method.on_evaluate(model, 0.5, step=1)  # before pruning starts: ignored
    assert method.teacher_snapshots == first
    method.on_evaluate(model, 0.5, step=9)
    method.on_evaluate(model, 0.4, step=10)  # worse: the teacher stays
    method.on_evaluate(model, 0.6, step=11)
    method.on_evaluate(model, 0.7, step=12)  # the window is over: nothing to distil
    assert method.teacher_snapshots == first + 2 and method.best_teacher_metric == 0.6
    start = _train("tiny-bert", teacher="start")[1]
    start.on_evaluate(model, 0.9, step=10)
    assert start.teacher_snapshots == 1


def test_a_pruning_window_over_half_the_run_is_noted():
    """APT's savings come after pruning: a run that prunes for most of its steps says so."""
    long_window = APTMethod(APTConfig(prune_start=16, prune_stop_epochs=1.5), keep=0.4,
                            total_steps=80, steps_per_epoch=40)
    assert any("until step 60 of 80 (75% of training)" in n for n in long_window.notes)
    papers = APTMethod(APTConfig(prune_start=16, prune_stop_epochs=3), keep=0.4,
                       total_steps=540, steps_per_epoch=27)
    assert papers.stop == 81 and not papers.notes
    gradual = APTMethod(APTConfig(schedule="gradual", prune_stop_epochs=1.5), keep=0.4,
                        total_steps=80, steps_per_epoch=40)
    assert not gradual.notes  # pruning throughout is what gradual asks for
