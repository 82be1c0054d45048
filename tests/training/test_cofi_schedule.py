"""CoFi's schedule as its trainer runs it: constant-rate, unclipped gates and multipliers, a
fine-tuning start, a fresh optimizer and schedule when pruning starts; and the final model
within two points of the target on a short schedule."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from lmprune.cli.main import main
from lmprune.config.train_schema import CoFiConfig
from lmprune.training.cofi import CoFiMethod
from lmprune.training.loop import Clock, LoopSettings, lr_factor, run_loop
from lmprune.training.method import TrainMethod
from lmprune.zoo import build_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


class _Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def autocast():
        return torch.autocast("cpu", enabled=False)

    @staticmethod
    def backward(loss):
        loss.backward()


class Linear1(TrainMethod):
    """loss = w_main + w_const (+ a huge gradient on w_big): each AdamW update of a parameter
    whose gradient keeps its sign is its learning rate, so the parameters record the rates."""

    def __init__(self, restarts=(), big=0.0, clip_const=False):
        self.w = {k: nn.Parameter(torch.zeros(())) for k in ("main", "const", "big")}
        self.restarts, self.big, self.clip_const = tuple(restarts), big, clip_const

    def parameter_groups(self, model, lr):
        return [{"params": [self.w["main"], self.w["big"]], "lr": lr},
                {"params": [self.w["const"]], "lr": 0.01, "constant_lr": True,
                 "clip": self.clip_const}]

    def schedule_restarts(self, total_steps):
        return self.restarts

    def loss(self, model, batch, step):
        return self.w["main"] + self.w["const"] * 1e-3 + self.big * self.w["big"]


def _run(method: TrainMethod, steps: int = 10, warmup: int = 2) -> None:
    settings = LoopSettings(total_steps=steps, batch_size=1, lr=0.1, warmup_steps=warmup,
                            eval_every=100, progress=False)
    run_loop(nn.Linear(1, 1), method, [{"x": torch.zeros(1)}] * 4,
             lambda rows: {"x": torch.stack([r["x"] for r in rows])}, settings, _Accelerator(),
             Clock())


def test_constant_groups_keep_their_rate_and_others_follow_the_schedule():
    method = Linear1()
    _run(method)
    scheduled = sum(lr_factor(s, 10, 2) for s in range(10))
    assert float(method.w["main"].detach()) == pytest.approx(-0.1 * scheduled, rel=1e-4)
    assert float(method.w["const"].detach()) == pytest.approx(-0.01 * 10, rel=1e-4)


def test_a_restart_runs_the_schedule_again_over_the_remaining_steps():
    method = Linear1(restarts=(4,))
    _run(method)
    factors = [lr_factor(s, 10, 2) for s in range(4)] + [lr_factor(s, 6, 2) for s in range(6)]
    assert float(method.w["main"].detach()) == pytest.approx(-0.1 * sum(factors), rel=1e-4)


def test_unclipped_groups_are_left_out_of_the_clipping():
    """A gradient of 1e9 elsewhere would scale w_const's 1e-3 gradient below AdamW's eps."""
    free, clipped = Linear1(big=1e9), Linear1(big=1e9, clip_const=True)
    _run(free)
    _run(clipped)
    assert float(free.w["const"].detach()) == pytest.approx(-0.1, rel=1e-3)
    assert abs(float(clipped.w["const"].detach())) < 0.01


def test_gates_wait_for_the_fine_tuning_steps_then_train():
    model = build_tiny("tiny-bert", "sequence-classification")
    method = CoFiMethod(CoFiConfig(finetune_steps=4, reg_lr=0.05), sparsity=0.6, total_steps=12)
    model = method.setup(model, None)
    start = {k: v.detach().clone().clamp(-4.6052, 4.6052) for k, v in method.gates.log_alpha.items()}
    ids = torch.randint(5, 128, (4, 10), generator=torch.Generator().manual_seed(0))
    features = [{"input_ids": i, "attention_mask": torch.ones(10, dtype=torch.long),
                 "labels": torch.tensor(n % 2)} for n, i in enumerate(ids)]

    def collate(rows):
        return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}

    def run(steps):
        settings = LoopSettings(total_steps=steps, batch_size=2, lr=1e-3, eval_every=100,
                                progress=False)
        run_loop(model, method, features, collate, settings, _Accelerator(), Clock())

    assert method.schedule_restarts(12) == (4,)
    run(4)  # steps 0-3: fine-tuning only
    assert all(torch.allclose(method.gates.log_alpha[k].detach(), start[k]) for k in start)
    assert not method.pruned and method.keep_ratio() == 1.0
    method.start = 0  # a run that has reached its pruning steps
    run(3)
    assert method.pruned
    assert any(not torch.allclose(method.gates.log_alpha[k].detach(), start[k]) for k in start)
    assert method.keep_ratio() == method.gates.deterministic_keep_ratio()


@pytest.mark.parametrize("kinds", ["[heads,attention,neurons,ffn,hidden]", "[heads,neurons]"])
def test_cofi_ends_within_two_points_of_its_target(tmp_path, kinds):
    out = tmp_path / "cofi"
    code = main(["train", "--method", "cofi", "--model", "tiny-bert", "--task", "foods",
                 "--sparsity", "0.6", "--out", str(out), "train.max_steps=24",
                 "train.max_train_samples=64", "train.batch_size=8", "train.max_len=32",
                 "train.max_eval_samples=16", "train.eval_every=8", "train.measure=false",
                 "train.progress=false", "train.test_split=null", f"cofi.kinds={kinds}"])
    assert code == 0
    m = json.loads((Path(out) / "metrics.json").read_text())
    info = m["info"]["cofi"]
    assert info["finetune_steps"] == 8  # CoFi's 100, capped at a third of the run
    assert abs(m["kept_params_ratio"] - 0.4) <= 0.02, info
    assert info["kept_ratio_fitted"] <= 0.4
    assert m["curve"][-1]["keep_ratio"] == round(m["kept_params_ratio"], 4)
    if "hidden" in kinds:  # the kept hidden size is aligned like the FFN widths (round_to 8)
        config = json.loads((Path(out) / "model" / "config.json").read_text())
        assert config["hidden_size"] % 8 == 0, config["hidden_size"]


def test_kept_hidden_channels_are_rounded_like_ffn_widths():
    """29 of tiny-bert's 32 hidden channels kept -> 24 (a multiple of cofi.round_to, within
    the kept parameters), the kept channels with the lowest log-alpha dropped; round_to=1
    keeps 29."""
    model = build_tiny("tiny-bert", "sequence-classification")
    method = CoFiMethod(CoFiConfig(kinds=["heads", "neurons", "hidden"]), sparsity=0.6,
                        total_steps=12)
    method.setup(model, None)
    size = method.gates.log_alpha["hidden"].numel()
    assert size == 32
    with torch.no_grad():
        method.gates.log_alpha["hidden"].copy_(torch.arange(size, dtype=torch.float32))
    keep = torch.ones(size)
    keep[[3, 20, 30]] = 0
    rounded = method._rounded_hidden(keep)
    expected = torch.zeros(size)
    expected[[i for i in range(size) if keep[i]][-24:]] = 1  # the 24 highest log-alpha kept
    assert torch.equal(rounded, expected)
    method.cfg = CoFiConfig(kinds=["heads", "neurons", "hidden"], round_to=1)
    assert torch.equal(method._rounded_hidden(keep), keep)
