"""benchmarks/apt_base/step_profile.py: profiled windows of the training loop, per phase."""
from __future__ import annotations

import argparse
import json

import pytest

from bench_scripts import load


def test_windows_are_profiled_and_every_step_is_timed(tmp_path):
    module = load("apt_base/step_profile.py")
    assert module.main(["--out", str(tmp_path), "--tiny", "--window", "early:3:2",
                        "--window", "late:15:3"]) == 0
    found = json.loads((tmp_path / "step_profile.json").read_text())
    assert [r["method"] for r in found["runs"]] == ["ft", "apt"]
    for run in found["runs"]:
        assert [w["window"] for w in run["windows"]] == ["early", "late"]
        assert [w["steps"] for w in run["windows"]] == [2, 3]
        assert len(run["step_ms"]) == found["steps"] - 1  # between consecutive steps
        assert all(ms > 0 for ms in run["step_ms"])
        for w in run["windows"]:
            assert w["wall_ms_per_step"] > 0 and w["ops_by_host_time"]
            assert w["kernel_ms_per_step"] == 0.0  # the CPU: no kernels
    apt = found["runs"][1]["windows"][0]["python_cumulative"]
    assert "apt.py" in apt  # APT's own functions show in its profile
    assert "== apt" in (tmp_path / "step_profile.txt").read_text()


def test_a_window_is_name_first_steps():
    module = load("apt_base/step_profile.py")
    assert module.window("events:16:16") == ("events", 16, 16)
    for bad in ("events:16", "events:x:3", "events:3:0"):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME:FIRST:STEPS"):
            module.window(bad)


@pytest.mark.parametrize("script", ["apt_base/sdpa_first_call.py",
                                    "apt_base/attention_memory.py"])
def test_gpu_only_scripts_say_so_on_a_cpu(script, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert load(script).main(["--out", str(tmp_path)]) == 2
    assert "needs a GPU" in capsys.readouterr().err
