"""benchmarks/speed/encoder_attention.py and call_overhead.py: the code paths of the two
probes of the compiled encoder (on a CPU: no GPU kernels, so only the records are checked)."""
from __future__ import annotations

import json

import pytest

from bench_scripts import load

pytestmark = pytest.mark.usefixtures("one_thread")


def test_encoder_attention_records_the_sdpa_backend_and_each_mode(tmp_path):
    module = load("speed/encoder_attention.py")
    assert module.main(["--out", str(tmp_path), "--quick", "--batch", "2", "--seq", "16",
                        "--calls", "2", "--modes", "eager", "default:masked", "default"]) == 0
    found = json.loads((tmp_path / "encoder_attention.json").read_text())
    first = found["eager_sdpa_calls"][0]
    assert first["mask"] is None and first["backend"] in module.BACKENDS.values()
    assert [m["mode"] for m in found["modes"]] == ["eager", "default:masked", "default"]
    assert all(m["ms_per_forward"] > 0 and "error" not in m for m in found["modes"])


def test_call_overhead_times_each_variant_and_mode(tmp_path):
    module = load("speed/call_overhead.py")
    assert module.main(["--out", str(tmp_path), "--quick", "--batch", "2", "--seq", "16",
                        "--calls", "2", "--variants", "dense", "--modes", "default",
                        "default:masked"]) == 0
    found = json.loads((tmp_path / "call_overhead.json").read_text())
    assert [(r["variant"], r["mode"]) for r in found["runs"]] == [("dense", "default"),
                                                                  ("dense", "default:masked")]
    for run in found["runs"]:
        assert run["ms_synchronised"] > 0 and run["ms_measure_inference"] > 0
    profiled = sorted(p.name for p in tmp_path.glob("cprofile-*.txt"))
    assert profiled == ["cprofile-dense-default-masked.txt", "cprofile-dense-default.txt"]
    assert "compiled.py" in (tmp_path / "cprofile-dense-default.txt").read_text()
