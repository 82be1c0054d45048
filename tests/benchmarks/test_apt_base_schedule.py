"""benchmarks/apt_base/run.py --schedule: the long schedule resolves to the runs it names."""
from __future__ import annotations

import sys

import pytest

from bench_scripts import load


def _run_module():
    """apt_base/run.py imports apt_offline's ``run``; other tests import speed's ``run`` by
    that name, so the name is not left in ``sys.modules``."""
    before = sys.modules.get("run")
    module = load("apt_base/run.py")
    if before is None:
        sys.modules.pop("run", None)
    else:
        sys.modules["run"] = before
    return module


def _config(module, method: str, argv: list[str]):
    from lmprune.config import load_config

    name, rest = module.split_schedule(argv)
    settings, common = module.schedule(name)
    args = module.offline.parse(rest)
    return load_config("train-apt", module.offline.overrides_for(method, args, settings, common))


@pytest.mark.parametrize("argv", [["--schedule", "long"], ["--schedule=long"]])
def test_long_schedule_trains_every_method_20_epochs_at_batch_128(tmp_path, argv):
    module = _run_module()
    base = ["--out", str(tmp_path), "--model", "tiny-bert"]
    for method in ("ft", "apt", "lora-prune"):
        train = _config(module, method, [*argv, *base]).train
        assert (train.epochs, train.batch_size, train.max_train_samples, train.eval_every) == \
            (20, 128, 3456, 27), method
    apt = _config(module, "apt", [*argv, *base]).apt
    assert (apt.prune_start, apt.prune_stop_epochs, apt.events) == (16, 3.0, 8)
    assert _config(module, "ft", [*argv, *base]).train.lr == 2e-5


def test_short_schedule_is_the_default_and_set_still_wins(tmp_path):
    module = _run_module()
    argv = ["--out", str(tmp_path), "--set", "apt:apt.prune_stop_epochs=2"]
    assert module.split_schedule(argv)[0] == "short"
    apt = _config(module, "apt", argv)
    assert (apt.train.epochs, apt.train.batch_size, apt.train.max_train_samples) == (2, 32, 1280)
    assert apt.apt.prune_stop_epochs == 2.0
    long_apt = _config(module, "apt", ["--schedule", "long", *argv])
    assert long_apt.apt.prune_stop_epochs == 2.0  # --set after the schedule's own settings


def test_unknown_schedule_is_refused(tmp_path):
    module = _run_module()
    with pytest.raises(SystemExit, match="use one of short, long"):
        module.schedule("paper")
    assert module.split_schedule(["--schedule"])[0] == "missing"
