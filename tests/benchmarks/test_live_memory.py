"""benchmarks/apt_base/live_memory.py: live tensor bytes per training step, on the CPU."""
from __future__ import annotations

import json

import pytest
import torch

from bench_scripts import load


def _module():
    return load("apt_base/live_memory.py")


def test_live_bytes_count_what_is_made_and_forget_what_is_freed():
    mode = _module().LiveBytes()
    with mode:
        a = torch.ones(1024)  # 4 KiB
        b = torch.ones(256)  # 1 KiB
        assert mode.now == 5 * 1024
        del a
        assert mode.now == 1024 and mode.peak == 5 * 1024
        mode.mark()
        c = b.view(16, 16)  # a view: no new storage
        assert mode.now == mode.peak == 1024
    del b, c


def test_every_step_is_recorded_in_order_and_the_peak_bounds_the_rest(tmp_path):
    module = _module()
    assert module.main(["--out", str(tmp_path), "--tiny", "--steps", "10", "--batch", "2",
                        "--seq", "16", "--set", "teacher_dtype=model"]) == 0
    out = json.loads((tmp_path / "live_memory.json").read_text())
    assert out["settings"] == {"teacher_dtype": "model"}
    for rows in out["runs"].values():
        assert [r["step"] for r in rows] == list(range(10))
        for r in rows:
            assert r["peak"] >= r["forward_end"] >= r["before"] > 0
    # FT holds its weights, their Adam moments (and gradients during the step); APT only
    # its frozen weights and small adapters: less alive between steps
    assert out["runs"]["apt"][0]["after"] < out["runs"]["ft"][0]["after"]


def test_a_bad_setting_is_refused():
    with pytest.raises(SystemExit):
        _module().main(["--out", "x", "--set", "no-equals-sign"])


def test_bf16_autocast_keeps_less_alive_at_the_end_of_the_forward(tmp_path):
    module = _module()
    peaks = {}
    for precision in ("no", "bf16"):
        out_dir = tmp_path / precision
        assert module.main(["--out", str(out_dir), "--tiny", "--steps", "10", "--batch", "4",
                            "--seq", "32", "--methods", "ft",
                            "--mixed-precision", precision]) == 0
        out = json.loads((out_dir / "live_memory.json").read_text())
        assert out["mixed_precision"] == precision
        rows = out["runs"]["ft"]
        peaks[precision] = max(r["forward_end"] - r["before"] for r in rows)
    assert peaks["bf16"] < peaks["no"]  # the activations kept for backward are bfloat16
