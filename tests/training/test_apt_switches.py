"""Every APT ablation switch (docs/apt.md, "Ablation switches") does what it says.

Issue #10: an ablation plan names components; the runner maps them onto ``apt.*`` overrides,
so each override must really remove or replace its component. Runs are tiny-bert with a
24-step schedule (pruning events at steps 2, 5, 9, 12 by default), seeded, so a variant and
the reference differ only by the switch.
"""
from __future__ import annotations

import json

import pytest
import torch
from accelerate import Accelerator

from lmprune.arch import describe
from lmprune.cli.main import main
from lmprune.config.train_schema import APTConfig, TrainConfig
from lmprune.errors import ConfigError, LmpruneError
from lmprune.pruners.apt_cost import select_bilinear
from lmprune.pruners.apt_schedule import pruning_events
from lmprune.structures.counting import count_parameters, head_cost, neuron_cost
from lmprune.training.apt import APTMethod
from lmprune.training.apt_teacher import APTTeacher
from lmprune.training.loop import Clock, LoopSettings, run_loop
from lmprune.tuners.apt_adapter import apt_modules
from lmprune.zoo import build_tiny

from apt_toys import collate, features

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS, KEEP = 24, 0.4
# outlier_scale=matched: on this tiny model the raw O(1) outlier term outweighs S~ so much that
# every hidden channel looks dense and none is pruned, which would hide the hidden switch
BASE = dict(targets=["q", "v", "ffn_up"], prune_start=2, prune_stop_epochs=3, events=4,
            round_to=1, outlier_scale="matched")


def _model():
    return build_tiny("tiny-bert", "sequence-classification")


def _feats():
    return features(_model().config.vocab_size)


def _calibration(feats):
    return lambda: [collate(feats[i:i + 8]) for i in range(0, 32, 8)]


def _method(steps=STEPS, keep=KEEP, **cfg) -> tuple[APTMethod, torch.nn.Module]:
    config = APTConfig(**{**BASE, **cfg})
    assert not config.validate()
    method = APTMethod(config, keep=keep, total_steps=steps, steps_per_epoch=4,
                       calibration=_calibration(_feats()))
    return method, _model()


def _run(steps=STEPS, keep=KEEP, on_eval=None, spy=False, **cfg) -> tuple[APTMethod, dict]:
    """Train a seeded tiny-bert with APT; returns the method and what the run observed."""
    torch.manual_seed(0)
    method, model = _method(steps, keep, **cfg)
    seen = {"events": [], "salience": []}
    if spy:  # record the salience ranked at every event and every step's raw salience
        stacked, raw = method._stacked_salience, method._salience
        method._stacked_salience = lambda step: _record(seen["events"], stacked(step))
        method._salience = lambda m: _record(seen["salience"], raw(m))
    model = method.setup(model)
    result = run_loop(model, method, _feats(), collate,
                      LoopSettings(steps, 8, 2e-3, eval_every=1, progress=False),
                      Accelerator(cpu=True), Clock(),
                      on_eval=(lambda s: on_eval(model, method, s)) if on_eval else None)
    seen["losses"], seen["model"] = result.losses, model
    return method, seen


def _record(store: list, value: dict) -> dict:
    store.append({k: v.detach().clone() for k, v in value.items()})
    return value


def _flat(masks) -> torch.Tensor:
    parts = list(masks.heads.values()) + list(masks.neurons.values())
    parts += [masks.hidden] if masks.hidden is not None else []
    return torch.cat([p.detach().reshape(-1) for p in parts])


def _kept_fraction(method, kind: str) -> float:
    masks = list(getattr(method.targets, kind).values())
    return float(sum((m > 0).sum() for m in masks)) / sum(m.numel() for m in masks)


def _prunable_units(model) -> int:
    structure = describe(model)
    units = sum(head_cost(model, s)["head"] * s.num_heads for s in structure.attention)
    return units + sum(neuron_cost(model, s) * s.width for s in structure.ffn)


def _meets_budget(method, model, keep=KEEP) -> bool:
    dense = _model()
    fixed = count_parameters(dense).body - _prunable_units(dense)
    kept = count_parameters(method.finish(model)).body - fixed
    return kept <= keep * _prunable_units(dense)


# --- apt.adapter=none --------------------------------------------------------------------

def test_no_adapter_tunes_the_backbone_and_apt_still_prunes_it():
    before = {n: p.detach().clone() for n, p in _model().named_parameters()}
    method, seen = _run(adapter="none", spy=True)
    model = seen["model"]
    assert not apt_modules(model) and method.adapters == {}
    assert all(p.requires_grad for p in model.parameters())  # full fine-tuning
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert any(".attention.self.query." in n for n in changed)
    assert any("intermediate.dense" in n for n in changed) and any("classifier" in n
                                                                    for n in changed)
    for event in seen["events"]:  # salience of every site is non-zero at every event
        assert all(torch.all(v.abs().sum(-1) > 0) for v in event.values())
    assert len(seen["events"]) == len(method.events) == 4
    assert method.teacher_snapshots >= 1 and "rank_growth" in method.notes[0]
    assert _meets_budget(method, model)


def test_empty_targets_point_at_adapter_none():
    with pytest.raises(ConfigError, match="apt.adapter=none"):
        APTConfig(targets=[])
    assert not APTConfig(targets=[], adapter="none").validate()
    config = APTConfig()
    config.targets = []  # built in code, past the config check
    method = APTMethod(config, keep=KEEP, total_steps=STEPS, steps_per_epoch=4)
    with pytest.raises(LmpruneError, match="apt.adapter=none"):
        method.setup(_model())


def test_salience_that_stays_zero_is_an_error_not_index_order():
    # adapters only on the FFN outputs: nothing before layer 0's attention needs a gradient
    with pytest.raises(LmpruneError, match="heads of .* all zero"):
        _run(targets=["ffn_out"], distill=False)


def test_no_adapter_learns_at_the_backbone_rate_never_the_adapter_rate():
    assert TrainConfig(method="apt").learning_rate() == 2e-4
    assert TrainConfig(method="apt").learning_rate("none") == 2e-5
    # the adapters' rate never reaches the backbone; apt.backbone_lr does
    assert TrainConfig(method="apt", lr=1e-3).learning_rate("none") == 2e-5
    assert TrainConfig(method="apt", lr=1e-3).learning_rate("none", 5e-5) == 5e-5
    assert TrainConfig(method="apt", lr=1e-3).learning_rate("lora", 5e-5) == 1e-3


# --- apt.teacher=separate ----------------------------------------------------------------

def test_separate_teacher_holds_its_own_frozen_weights():
    frozen = {}

    def check(model, method, step):
        teacher = method.teacher.model
        if teacher is not None and not frozen:  # the first evaluation after the snapshot
            frozen.update({k: v.clone() for k, v in teacher.state_dict().items()})

    # distillation to the last step: the copy is still there to look at after the run
    method, seen = _run(teacher="separate", on_eval=check, compact=False, distill_epochs=100)
    student, teacher = seen["model"], method.teacher.model
    assert method.teacher_snapshots == 1 and frozen  # one copy, when pruning started
    assert not apt_modules(teacher)  # adapters merged into the copy
    state = teacher.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())  # training never touched it
    assert not any(p.requires_grad for p in teacher.parameters())
    student_storage = {p.untyped_storage().data_ptr() for p in student.parameters()}
    assert not student_storage & {p.untyped_storage().data_ptr() for p in teacher.parameters()}
    assert not torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert {p.device for p in teacher.parameters()} == {p.device for p in student.parameters()}
    assert method.summary()["teacher_params"] == count_parameters(_model()).total


def test_separate_teacher_following_the_student_is_compacted_with_it():
    method, seen = _run(teacher="separate", teacher_structure="student", distill_epochs=100)
    student, teacher = seen["model"], method.teacher.model
    assert method.compactions and method.teacher_snapshots == 1
    bases = {n.replace(".base.", "."): p.shape for n, p in student.named_parameters()
             if "lora_" not in n}
    assert {n: p.shape for n, p in teacher.named_parameters()} == bases
    assert method.teacher.parameter_count() < count_parameters(_model()).total  # it shrank
    assert method.summary()["teacher_params"] == count_parameters(_model()).total  # at most


def test_separate_teacher_computes_what_the_shared_teacher_computes_when_taken():
    method, model = _method()
    model = method.setup(model).eval()
    for a in apt_modules(model).values():  # trained-looking adapters and a pruned head
        torch.nn.init.normal_(a.lora_B, std=0.05)
    method.masks.heads[next(iter(method.masks.heads))][1] = 0.0
    shared, separate = APTTeacher("start", method.structure), APTTeacher("separate",
                                                                         method.structure)
    shared.snapshot(model, method.masks)
    separate.snapshot(model, method.masks)
    batch = collate(_feats()[:4])
    expected = shared.outputs(model, batch).logits
    assert torch.allclose(separate.outputs(model, batch).logits, expected, atol=1e-5)
    for a in apt_modules(model).values():  # the student moves on: neither teacher follows
        a.lora_B.data += 1.0
    assert torch.allclose(shared.outputs(model, batch).logits, expected, atol=1e-5)
    assert torch.allclose(separate.outputs(model, batch).logits, expected, atol=1e-5)


# --- apt.schedule=oneshot ----------------------------------------------------------------

def test_oneshot_prunes_by_calibration_salience_and_keeps_the_task_loss():
    method, model = _method(schedule="oneshot")
    method.setup(model)
    assert method.events == [0] and method.calibrated_batches == 4
    assert all(p.grad is None for p in model.parameters())  # scored, not stepped
    salience = method._stacked_salience(0)
    assert all(torch.all(v.sum(-1) > 0) for v in salience.values())
    available = {k: torch.ones_like(v) for k, v in salience.items()}
    expected = select_bilinear(salience, method.cost, KEEP * method.dense_cost, available)
    for kind in ("heads", "neurons"):
        got = torch.stack(list(getattr(method.masks, kind).values()))
        assert torch.equal(got, expected[kind])  # binary from step 0, chosen by salience
    index_order = [torch.arange(len(m)) < int(m.sum()) for m in method.masks.neurons.values()]
    assert any(not torch.equal(m > 0, prefix)
               for m, prefix in zip(method.masks.neurons.values(), index_order, strict=True))
    assert method.keep_ratio() <= KEEP
    assert method.distill_weight(0) == 0.0  # the task loss has weight 1 at step 0 ...
    assert all(method.distill_weight(s) < 1.0 for s in range(method.stop))  # ... and > 0
    batch = collate(_feats()[:8])
    model.eval()
    with torch.no_grad(), method.active(model):
        task = model(**batch).loss
    assert torch.allclose(method.loss(model, batch, 0), task)


def test_oneshot_keeps_its_masks_through_training_and_needs_calibration():
    method, seen = _run(schedule="oneshot")
    assert [e["step"] for e in method.log] == [0] and _meets_budget(method, seen["model"])
    bare = APTMethod(APTConfig(**{**BASE, "schedule": "oneshot"}), keep=KEEP,
                     total_steps=STEPS, steps_per_epoch=4)
    with pytest.raises(LmpruneError, match="calibration"):
        bare.setup(_model())


# --- apt.salience=random -----------------------------------------------------------------

def test_random_keeps_heads_and_neurons_in_proportion_at_the_budget():
    for seed in range(3):
        method, model = _method(salience="random")
        method.generator.manual_seed(seed)
        model = method.setup(model)
        method._prune_event(model, method.events[-1])
        heads, neurons = _kept_fraction(method, "heads"), _kept_fraction(method, "neurons")
        assert abs(heads - neurons) <= 1 / 8  # 8 heads: within one head of rounding
        assert abs(neurons - KEEP) <= 0.05 and _meets_budget(method, model)
    method, seen = _run(salience="random")
    assert _meets_budget(method, seen["model"])


# --- apt.schedule=after ------------------------------------------------------------------

def test_after_prunes_once_when_tuning_ends():
    seen_keep = []
    method, seen = _run(schedule="after", on_eval=lambda m, meth, s: seen_keep.append(
        (s, meth.keep_ratio(), bool(torch.all(_flat(meth.masks) == 1)))))
    assert method.events == [STEPS] and [e["step"] for e in method.log] == [STEPS]
    assert all(k == 1.0 and ones for s, k, ones in seen_keep if s < STEPS)  # dense until then
    assert seen_keep[-1][0] == STEPS and seen_keep[-1][1] <= KEEP
    method.on_evaluate(seen["model"], 1.0, STEPS)  # the run's final dev evaluation
    assert set(method.ema.value) and method.teacher_snapshots == 0  # no pruned model trains
    assert method.log[0]["grown"] == 0  # no rank growth with no training left
    assert _meets_budget(method, seen["model"])


# --- every switch changes what it says, against the reference ----------------------------

@pytest.fixture(scope="module")
def reference():
    return _run(spy=True)


def _ranks(seen) -> list[int]:
    return [a.rank for a in apt_modules(seen["model"]).values()]


def _same_start(reference, seen) -> bool:
    """Steps before the first event are the reference's (the switch acts from there on)."""
    return seen["losses"][:2] == reference["losses"][:2]


SWITCHES = {
    "kurtosis=false": dict(kurtosis=False),
    "salience=magnitude": dict(salience="magnitude", compact=False),  # o keeps its heads
    "salience=fisher": dict(salience="fisher"),
    "salience=random": dict(salience="random"),
    "distill=false": dict(distill=False),
    "rank_growth=static": dict(rank_growth="static"),
    "rank_growth=uniform": dict(rank_growth="uniform"),
    "schedule=late": dict(schedule="late"),
    "schedule=gradual": dict(schedule="gradual"),
    "schedule=oneshot": dict(schedule="oneshot"),
    "schedule=after": dict(schedule="after"),
    "ema=0": dict(ema=0.0),
    "structures+hidden": dict(structures=["heads", "neurons", "hidden"]),
    "teacher=separate": dict(teacher="separate"),
    "adapter=none": dict(adapter="none"),
}


def _check_switch(name, method, seen, ref_method, ref):
    """What the switch itself must have changed (beyond 'something differs')."""
    first, ref_first = (seen["events"] or [None])[0], ref["events"][0]
    if name == "kurtosis=false":  # the same S~ without the (non-negative) outlier term
        assert _same_start(ref, seen)
        assert all(torch.all(first[k] <= ref_first[k] + 1e-6) for k in first)
        assert any(torch.any(first[k] < ref_first[k] - 1e-6) for k in first)
    elif name == "salience=magnitude":  # L1 norms of the frozen output projections' columns
        o = seen["model"].bert.encoder.layer[0].attention.output.dense.weight
        assert torch.allclose(first["heads"][0].float(), o.T.reshape(4, 8, -1).abs().sum((1, 2)))
    elif name == "salience=fisher":
        assert all(m.requires_grad for m in method.masks.heads.values())
        assert not torch.allclose(first["heads"], ref_first["heads"])
    elif name == "salience=random":
        assert all(not s for s in seen["salience"])  # no data-driven score is computed
    elif name == "distill=false":
        assert method.teacher_snapshots == 0 and ref_method.teacher_snapshots >= 1
        last = ref_method.distill_end - 1  # the last step of the pruning window
        assert method.distill_weight(last) == 0 and ref_method.distill_weight(last) > 0
    elif name == "rank_growth=static":
        assert set(_ranks(seen)) == {8} and max(_ranks(ref)) > 8
    elif name == "rank_growth=uniform":  # every adapter grows alike; APT grows half of them
        assert len(set(_ranks(seen))) == 1 and _ranks(seen)[0] > 8
        assert len(set(_ranks(ref))) > 1
    elif name == "schedule=late":
        assert method.events == [ref_method.stop] and len(ref_method.events) == 4
    elif name == "schedule=gradual":
        # the cubic over the whole run; its step-0 event (keep 1) is dropped
        assert method.events == [7, 14, 21] == pruning_events(0, int(0.9 * STEPS), 4)[1:]
        assert ref_method.events == [2, 5, 9, 12]
    elif name == "schedule=oneshot":
        assert method.events == [0] and method.calibrated_batches == 4
    elif name == "schedule=after":
        assert method.events == [STEPS]
    elif name == "ema=0":  # the score ranked is the last step's, no memory
        last = [s for s in seen["salience"] if s][-1]
        assert all(torch.allclose(method.ema.value[k], v) for k, v in last.items())
        ref_last = [s for s in ref["salience"] if s][-1]
        assert not all(torch.allclose(ref_method.ema.value[k], v) for k, v in ref_last.items())
    elif name == "structures+hidden":
        assert method.masks.hidden is not None and (method.masks.hidden == 0).any()
        assert ref_method.masks.hidden is None
    elif name == "teacher=separate":
        assert method.teacher_snapshots == 1 and method.summary()["teacher"] == "separate"
        assert ref_method.teacher.mode == "best"
    elif name == "adapter=none":
        assert not apt_modules(seen["model"]) and apt_modules(ref["model"])


@pytest.mark.parametrize("name", list(SWITCHES))
def test_each_switch_changes_what_it_says(name, reference):
    ref_method, ref = reference
    method, seen = _run(spy=True, **SWITCHES[name])
    _check_switch(name, method, seen, ref_method, ref)
    observed = (_flat(method.targets), seen["losses"], _ranks(seen))
    expected = (_flat(ref_method.targets), ref["losses"], _ranks(ref))
    assert not (torch.equal(observed[0], expected[0]) and observed[1:] == expected[1:])


def test_reference_runs_are_reproducible(reference):
    ref_method, ref = reference
    method, seen = _run(spy=True)
    assert seen["losses"] == ref["losses"] and torch.equal(_flat(method.targets),
                                                           _flat(ref_method.targets))


# --- through the CLI ---------------------------------------------------------------------

@pytest.mark.parametrize("switches", [["apt.adapter=none", "apt.teacher=separate"],
                                      ["apt.schedule=oneshot", "apt.calibration_batches=2"],
                                      ["apt.schedule=after", "apt.salience=random"]])
def test_switches_run_end_to_end(tmp_path, switches):
    out = tmp_path / "run"
    assert main(["train", "--method", "apt", "--model", "tiny-bert", "--task", "foods",
                 "--sparsity", "0.6", "--out", str(out), "train.max_steps=6",
                 "train.max_train_samples=48", "train.max_eval_samples=16", "train.eval_every=3",
                 "train.measure=false", "train.progress=false", "apt.prune_start=1",
                 *switches]) == 0
    m = json.loads((out / "metrics.json").read_text())
    info = m["info"]["apt"]
    assert 0.3 < m["kept_params_ratio"] <= 0.47
    if "apt.adapter=none" in switches:
        assert m["config"]["lr"] == m["phases"][0]["lr"] == 2e-5
        assert info["adapter"] == "none" and info["teacher_params"] > 0
    if "apt.schedule=oneshot" in switches:
        assert info["calibration_batches"] == 2 and info["pruning_log"][0]["step"] == 0
    if "apt.schedule=after" in switches:
        assert info["events"] == [6] and m["curve"][-2]["keep_ratio"] < 0.5
