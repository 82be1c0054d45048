"""APT compaction during training (issue #11): the compacted run is the masked run, smaller.

Every run here is seeded, in float64 and without dropout, so "the same" means equal up to
the order of float sums: losses step by step, the final model's logits, the pruning decisions.
(With dropout the two runs draw different random numbers once the compacted model has fewer
heads, so they agree in distribution only.)
"""
from __future__ import annotations

import gc
import weakref

import pytest
import torch
from accelerate import Accelerator

from lmprune.config.train_schema import APTConfig
from lmprune.structures.masks import Masks
from lmprune.training.apt import APTMethod
from lmprune.training.compaction import carry_optimizer, compact
from lmprune.training.loop import Clock, LoopSettings, build_optimizer, run_loop
from lmprune.training.method import TrainMethod
from lmprune.tuners.apt_adapter import apply_apt, apt_modules
from lmprune.zoo import build_tiny

from apt_toys import collate, features, float64_model

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 24


def _run(name: str, compact: bool, steps: int = STEPS, on_eval=None, **cfg):
    defaults = dict(prune_start=2, prune_stop_epochs=3, events=4, round_to=1,
                    targets=["q", "v"] if name != "tiny-bert" else ["q", "v", "ffn_up"])
    config = APTConfig(**{**defaults, **cfg, "compact": compact})
    assert not config.validate()
    method = APTMethod(config, keep=0.4, total_steps=steps, steps_per_epoch=4)
    model = method.setup(float64_model(name))
    feats = features(model.config.vocab_size, seq2seq=name == "tiny-t5")
    result = run_loop(model, method, feats, collate,
                      LoopSettings(steps, 8, 2e-3, eval_every=4, progress=False),
                      Accelerator(cpu=True), Clock(),
                      on_eval=(lambda s: on_eval(model, method, s)) if on_eval else None)
    return model, method, result, feats


def _logits(model, feats):
    model.eval()
    with torch.no_grad():
        return model(**collate(feats[:6])).logits


CASES = {
    "tiny-bert": {},
    "tiny-bert+hidden": dict(structures=["heads", "neurons", "hidden"]),
    "tiny-bert+step+layers": dict(selection="step", min_units=0),
    "tiny-bert+separate": dict(teacher="separate", structures=["heads", "neurons", "hidden"]),
    "tiny-bert+teacher-follows": dict(teacher_structure="student",
                                      structures=["heads", "neurons", "hidden"]),
    "tiny-bert+separate-follows": dict(teacher="separate", teacher_structure="student"),
    "tiny-bert+no-adapter": dict(adapter="none", structures=["heads", "neurons", "hidden"]),
    "tiny-llama": {},
    "tiny-llama+hidden": dict(structures=["heads", "neurons", "hidden"]),
    "tiny-t5": {},
}


@pytest.mark.parametrize("case", list(CASES))
def test_compacted_training_equals_masked_training(case):
    name = case.split("+")[0]

    def on_eval(model, method, step):  # a dev metric that makes the teacher refresh often
        method.on_evaluate(model, float(step % 8), step)

    masked, m_method, m_result, feats = _run(name, False, on_eval=on_eval, **CASES[case])
    small, c_method, c_result, _ = _run(name, True, on_eval=on_eval, **CASES[case])
    assert c_method.compactions, "nothing was compacted"
    assert torch.allclose(torch.tensor(c_result.losses), torch.tensor(m_result.losses),
                          rtol=1e-6, atol=1e-9)
    assert [e["kept"] for e in c_method.log] == [e["kept"] for e in m_method.log]
    assert [e["adapter_params"] for e in c_method.log] == [e["adapter_params"] for e in m_method.log]
    assert c_method.teacher_snapshots == m_method.teacher_snapshots
    # training ran on the smaller model: fewer parameters right after the first compaction
    first = c_method.compactions[0]
    assert first["params_after"] < first["params_before"]
    expected = _logits(m_method.finish(masked), feats)
    got = _logits(c_method.finish(small), feats)
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-9)
    assert {n: p.shape for n, p in small.named_parameters()} == \
        {n: p.shape for n, p in masked.named_parameters()}


def test_compaction_points_are_events_and_the_settled_targets():
    _, method, result, _ = _run("tiny-bert", True)
    steps = [c["step"] for c in method.compactions]
    # an event sets targets; the masks reach them (0) by the next event, which removes them
    first = next(i for i, e in enumerate(method.log) if e["target_keep"] < 1)
    assert steps[0] == method.events[first + 1]
    assert set(steps) <= set(method.events) | {steps[-1]}
    # once the masks reach the last event's targets, the model holds exactly those units
    assert method.settled
    current = method.space.current
    for site in current.attention:
        assert site.num_heads == int(method.targets.heads[site.name].sum())
    for site in current.ffn:
        assert site.width == int(method.targets.neurons[site.name].sum())
    assert result.rebuilds >= len(steps)
    frozen = [c["params_after"] - c["trainable"] for c in method.compactions]  # the backbone
    assert frozen == sorted(frozen, reverse=True) and len(set(frozen)) == len(frozen)


def test_rank_growth_counts_the_compacted_adapters_and_still_grows():
    model, method, _, _ = _run("tiny-bert", True, growth_factor=4.0)
    ranks = [a.rank for a in apt_modules(model).values()]
    assert max(ranks) > 8 and min(ranks) >= 8
    dims = method._adapter_dims()
    for path, a in apt_modules(model).items():  # what the method counts is what the model holds
        assert dims[path] == (a.lora_A.shape[1], a.lora_B.shape[0])
    sizes = [e["adapter_params"] for e in method.log]
    assert sizes[-1] > method.initial_adapter_params
    _, masked, _, _ = _run("tiny-bert", False, growth_factor=4.0)
    assert [e["grown"] for e in method.log] == [e["grown"] for e in masked.log]


def test_nothing_full_size_stays_alive_after_compaction():
    gone = []

    def watch(model, method, step):
        if not gone:  # the full-size adapters and backbone of the first evaluation
            gone.extend(weakref.ref(p) for p in model.parameters())

    model, method, _, _ = _run("tiny-bert", True, on_eval=watch, teacher_structure="student",
                               structures=["heads", "neurons", "hidden"], distill_epochs=100)
    gc.collect()
    alive = [r for r in gone if r() is not None]
    assert all(p.shape == r().shape for r in alive for p in [r()])
    assert len(alive) < len(gone) / 2  # every sliced tensor was freed
    structure = method.space.current
    assert structure.hidden.size == int(method.space.alive.hidden.sum())
    for site in structure.attention:  # the model holds exactly the alive units
        assert site.num_heads == int(method.space.alive.heads[site.name].sum())
    teacher = method.teacher.state
    params = dict(model.named_parameters())
    for name, frozen in teacher.items():  # cut like the student (ranks may differ)
        dims = [1] if name.endswith("lora_A") else [0] if name.endswith("lora_B") else [0, 1]
        assert all(frozen.shape[d] == params[name].shape[d] for d in dims if d < frozen.dim())
    assert method.transform.lora_A.shape[1] == structure.hidden.size


def _adapted():
    torch.manual_seed(0)
    model = build_tiny("tiny-bert", "sequence-classification").double()
    apply_apt(model, ["q", "v", "ffn_up"], r=4)
    for a in apt_modules(model).values():
        torch.nn.init.normal_(a.lora_B, std=0.1)
    return model


@pytest.mark.parametrize("in_place", [False, True])
def test_optimizer_moments_of_kept_units_are_kept_exactly(in_place):
    model = _adapted()
    method = TrainMethod()
    method.parameter_groups = lambda m, lr: [{"params": [p for p in m.parameters()
                                                         if p.requires_grad], "lr": lr}]
    opt = build_optimizer(method, model, 1e-2, 0.0)
    batch = collate(features(model.config.vocab_size)[:8])
    for _ in range(2):
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    q = model.bert.encoder.layer[0].attention.self.query
    up = model.bert.encoder.layer[1].intermediate.dense
    before = {"qB": opt.state[q.lora_B]["exp_avg_sq"].clone(),
              "qA": opt.state[q.lora_A]["exp_avg"].clone(),
              "upB": opt.state[up.lora_B]["exp_avg"].clone(), "step": opt.state[q.lora_B]["step"]}
    keep = Masks(heads={"layers.0.attn": torch.tensor([1., 0., 1., 1.])},
                 neurons={"layers.1.ffn": (torch.arange(64) % 3 != 0).double()},
                 hidden=(torch.arange(32) % 4 != 1).double())
    moves = compact(model, keep)
    if in_place:
        carry_optimizer(opt, moves, model.parameters())
        new = opt
    else:
        new = build_optimizer(method, model, 1e-2, 0.0, previous=opt, moves=moves)
    rows = torch.cat([torch.arange(0, 8), torch.arange(16, 32)])
    cols = torch.nonzero(keep.hidden).flatten()
    neurons = torch.nonzero(keep.neurons["layers.1.ffn"]).flatten()
    assert torch.equal(new.state[q.lora_B]["exp_avg_sq"], before["qB"][rows])
    assert torch.equal(new.state[q.lora_A]["exp_avg"], before["qA"][:, cols])
    assert torch.equal(new.state[up.lora_B]["exp_avg"], before["upB"][neurons])
    assert torch.equal(new.state[q.lora_B]["step"], before["step"])
    assert set(new.state) == {p for p in model.parameters() if p.requires_grad}
    model(**batch).loss.backward()  # and training goes on with it
    new.step()


def test_compaction_refuses_stale_gradients():
    model = _adapted()
    model(**collate(features(model.config.vocab_size)[:4])).loss.backward()
    with pytest.raises(Exception, match="zero_grad"):
        compact(model, Masks(heads={"layers.0.attn": torch.tensor([1., 0., 1., 1.])}))


def test_a_teacher_that_keeps_its_structure_becomes_a_frozen_copy_at_compaction():
    # teacher=best, structure: snapshot; distillation to the last step keeps it to look at
    model, method, _, feats = _run("tiny-bert", True, distill_epochs=100)
    teacher = method.teacher
    assert teacher.model is not None and teacher.state is None  # made before the first cut
    sizes = {n: p.shape for n, p in teacher.model.named_parameters()}
    student = {n.replace(".base.", "."): p.shape for n, p in model.named_parameters()
               if "lora_" not in n}
    assert sizes.keys() == student.keys() and sizes != student  # it kept pruned blocks
    assert not any(p.requires_grad for p in teacher.model.parameters())
    method.on_evaluate(model, 2.0, method.stop)  # a refresh takes the student as it is now
    assert teacher.model is None and teacher.state is not None


def test_a_teacher_copy_in_bfloat16_halves_its_memory_and_computes_nearly_the_same():
    # teacher=start: one copy, made at the first compaction from the same student in both
    wide, w_method, w_result, feats = _run("tiny-bert", True, teacher="start",
                                           teacher_dtype="model", distill_epochs=100)
    half, h_method, h_result, _ = _run("tiny-bert", True, teacher="start",
                                       teacher_dtype="bfloat16", distill_epochs=100)
    w_copy, h_copy = w_method.teacher.model, h_method.teacher.model
    assert {p.dtype for p in w_copy.parameters()} == {torch.float64}
    assert {p.dtype for p in h_copy.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in half.parameters()} == {torch.float64}  # the student untouched
    assert h_method.summary()["teacher_copy_dtype"] == "bfloat16"
    assert w_method.summary()["teacher_copy_dtype"] == "float64"
    size = {m: sum(p.numel() * p.element_size() for p in c.parameters())
            for m, c in (("w", w_copy), ("h", h_copy))}
    assert size["h"] * 4 == size["w"]
    for (name, a), (_, b) in zip(w_copy.state_dict().items(), h_copy.state_dict().items(),
                                 strict=True):
        if a.is_floating_point():
            assert torch.equal(a.to(torch.bfloat16), b), name
    batch = collate(feats[:8])
    with torch.no_grad():
        w_out = w_copy.eval()(**batch).logits
        h_out = h_copy.eval()(**batch).logits.double()
    assert torch.allclose(h_out, w_out, rtol=5e-2, atol=5e-2 * w_out.abs().max())
    # the losses before the copy is made are identical, then they differ
    first = h_method.compactions[0]["step"]
    assert h_result.losses[:first] == w_result.losses[:first]
    assert h_result.losses[first + 1:] != w_result.losses[first + 1:]


@pytest.mark.parametrize("teacher", ["best", "separate"])
def test_auto_keeps_the_model_dtype_on_a_cpu_and_separate_copies_keep_it_on_a_gpu(teacher):
    from lmprune.training.apt_teacher import kept_dtype

    f32, bf16 = torch.float32, torch.bfloat16
    assert kept_dtype("auto", teacher, f32, "cpu") is None
    assert kept_dtype("model", teacher, f32, "cuda") is None
    assert kept_dtype("bfloat16", teacher, f32, "cpu") is bf16
    assert kept_dtype("bfloat16", teacher, bf16, "cuda") is None  # already narrow
    assert kept_dtype("auto", teacher, f32, "cuda") is (None if teacher == "separate" else bf16)
    _, method, _, _ = _run("tiny-bert", True, teacher=teacher, distill_epochs=100)  # auto, CPU
    assert {p.dtype for p in method.teacher.model.parameters()} == {torch.float64}


def test_distillation_ends_after_distill_epochs_and_frees_the_teacher():
    model, method, result, feats = _run("tiny-bert", True, distill_epochs=2.5)
    assert method.distill_end == 2 + 10  # prune_start 2, 2.5 epochs of 4 steps
    assert method.summary()["distill_end"] == 12
    teacher = method.teacher
    assert teacher.model is None and teacher.state is None and not teacher.ready
    assert teacher.parameter_count() == 0
    assert method.summary()["teacher_params"] > 0  # what it held at most, still reported
    assert method.distill_weight(11) > 0 and method.distill_weight(12) == 0.0
    # the steps before the end are those of a run that distils to the last step
    _, _, full, _ = _run("tiny-bert", True, distill_epochs=100)
    assert result.losses[:12] == full.losses[:12]
    assert result.losses[12:] != full.losses[12:]


def test_distill_epochs_must_be_positive():
    from lmprune.errors import ConfigError

    with pytest.raises(ConfigError, match="distill_epochs: must be > 0"):
        APTConfig(distill_epochs=0)


@pytest.mark.parametrize("selection", ["event", "step"])
def test_masks_move_only_until_they_reach_their_targets(monkeypatch, selection):
    """The masks move only in the mask_moves steps after new targets (counted on the
    host); the run equals one that moves them after every step, as before."""
    import lmprune.training.apt as apt_module

    moved_at = []
    real = apt_module.move_masks

    def counting(*args, **kwargs):
        moved_at.append(len(moved_at))
        return real(*args, **kwargs)

    monkeypatch.setattr(apt_module, "move_masks", counting)
    cfg = dict(selection=selection, min_units=0 if selection == "step" else 1)
    _, lean, lean_result, feats = _run("tiny-bert", True, **cfg)
    lean_moves = len(moved_at)

    always = APTMethod.after_step

    def after_step(self, model, step):
        self.moves_left = 10 ** 9  # the old rule: move after every step until settled
        return always(self, model, step)

    monkeypatch.setattr(APTMethod, "after_step", after_step)
    moved_at.clear()
    full, old, old_result, _ = _run("tiny-bert", True, **cfg)
    assert lean_moves < len(moved_at)
    assert lean_result.losses == old_result.losses  # bit for bit: skipped moves were no-ops
    assert [e["kept"] for e in lean.log] == [e["kept"] for e in old.log]
    assert lean.compactions == old.compactions


@pytest.mark.parametrize("compact", [True, False])
def test_masks_are_left_off_only_while_they_are_all_ones(monkeypatch, compact):
    """Before the first targets and once settled and compacted, every mask is 1: the masks
    stay off the model (no hooks) and the run equals one that applies them every step."""
    from lmprune.structures import masks as masks_module

    applied = []
    real = masks_module.apply_masks

    def counting(model, *args, **kwargs):
        applied.append(model)
        return real(model, *args, **kwargs)

    import lmprune.training.apt as apt_module
    monkeypatch.setattr(apt_module, "apply_masks", counting)
    _, lean, lean_result, _ = _run("tiny-bert", compact)
    lean_applied = len(applied)

    def always(self, model):
        return real(model, self.space.to_model(self.masks), self.space.current,
                    check_values=False)

    monkeypatch.setattr(APTMethod, "active", always)
    applied.clear()
    _, full, full_result, _ = _run("tiny-bert", compact)
    assert lean_result.losses == full_result.losses  # bit for bit
    assert [e["kept"] for e in lean.log] == [e["kept"] for e in full.log]
    steps = len(lean_result.losses)
    assert lean_applied < steps  # skipped before the first event (and settled, compacted)
