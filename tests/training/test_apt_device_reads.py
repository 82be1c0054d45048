"""APT reads nothing back from the device on a settled training step (GPU speed, issue #11).

Every ``bool(tensor)``, ``.item()``, ``nonzero`` or ``torch.equal`` makes the host wait for the
GPU, which then idles while Python prepares the next kernels: on an H200 APT's steps took 3x a
full fine-tuning step although the compacted model is 40% of the size, with ~130 such reads per
step (mask validation on every forward, index lookups of the compacted masks, the layer
survival check, the mask schedule's target check, the progress bar's kept ratio). Once the
masks have settled none of them is needed; the reads that remain come from the model's own
code (transformers), counted apart.
"""
from __future__ import annotations

import collections
import traceback

import pytest
import torch
from accelerate import Accelerator
from torch.utils._python_dispatch import TorchDispatchMode

from lmprune.config.train_schema import APTConfig
from lmprune.training.apt import APTMethod
from lmprune.training.loop import Clock, LoopSettings, run_loop

from apt_toys import collate, features, float64_model

pytestmark = pytest.mark.usefixtures("one_thread")

READS = {"aten._local_scalar_dense", "aten.nonzero", "aten.equal", "aten.is_nonzero"}


class DeviceReads(TorchDispatchMode):
    """Counts device reads by the innermost frame outside torch: lmprune's or another's."""

    def __init__(self) -> None:
        super().__init__()
        self.by = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func.overloadpacket) in READS:
            frames = [f for f in traceback.extract_stack()
                      if "/torch/" not in f.filename and __file__ != f.filename]
            where = frames[-1] if frames else None
            owner = "lmprune" if where and "/lmprune/" in where.filename else "other"
            self.by[(owner, f"{where.filename.split('/')[-1]}:{where.lineno}" if where else "")] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("compact", [True, False])
def test_settled_apt_steps_read_nothing_back(compact):
    steps = 16
    config = APTConfig(prune_start=2, prune_stop_epochs=1, events=2, round_to=1, compact=compact,
                       targets=["q", "v", "ffn_up"])
    method = APTMethod(config, keep=0.4, total_steps=steps, steps_per_epoch=4)
    model = method.setup(float64_model("tiny-bert"))
    counter, watched, settled_at = DeviceReads(), [], {}
    loss, after_backward, after_step = method.loss, method.after_backward, method.after_step

    def counted(fn):
        def call(model_, *args):
            # the last event's masks were reached and compacted a step ago (the step after a
            # compaction looks the new alive indices up once)
            if method.settled and args[-1] > settled_at.setdefault("step", args[-1]):
                watched.append(args[-1])
                with counter:
                    return fn(model_, *args)
            return fn(model_, *args)
        return call

    method.loss, method.after_backward, method.after_step = (
        counted(loss), counted(after_backward), counted(after_step))
    run_loop(model, method, features(model.config.vocab_size), collate,
             LoopSettings(steps, 8, 2e-3, eval_every=steps, progress=True), Accelerator(cpu=True),
             Clock())
    settled_steps = len(set(watched))
    assert settled_steps >= 5, "the run must settle early enough to be measured"
    ours = {k: v for k, v in counter.by.items() if k[0] == "lmprune"}
    assert ours == {}, f"lmprune reads the device on settled steps: {ours}"
    # the model's own forward passes (student, teacher) may read; that is not ours to remove
    assert sum(counter.by.values()) <= 4 * settled_steps


def test_the_kept_ratio_and_layer_survival_follow_the_masks():
    """The cached answers change when a mask changes in place (its version)."""
    config = APTConfig(prune_start=1, prune_stop_epochs=1, events=1, round_to=1,
                       targets=["q", "v", "ffn_up"])
    method = APTMethod(config, keep=0.4, total_steps=8, steps_per_epoch=4)
    method.setup(float64_model("tiny-bert"))
    before = method.keep_ratio(), method._kept_sites()
    site, mask = next(iter(method.masks.neurons.items()))
    with torch.no_grad():
        mask.zero_()
    after = method.keep_ratio(), method._kept_sites()
    assert after[0] < before[0]
    assert before[1][site] and not after[1][site]
