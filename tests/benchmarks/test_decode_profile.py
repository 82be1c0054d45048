"""benchmarks/speed/decode_profile.py: GPU kernel time of a compiled decode step, by kind."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from bench_scripts import load

pytestmark = pytest.mark.usefixtures("one_thread")


def test_kernels_are_sorted_into_kinds_as_the_h200_names_them():
    module = load("speed/decode_profile.py")
    names = {"nvjet_sm90_tst_128x8_64x12_4x1_v_bz_splitK_TNT": "gemm",
             "void cublasLt::splitKreduce_kernel<32, 16, int, float>": "gemm",
             "cudnn_generated_fort_native_sdpa_sm80_flash_fprop_wmma_f16": "attention",
             "fmha_cutlassF_bf16_aligned_64x128_rf_sm80": "attention",
             "triton_poi_fused__scaled_dot_product_cudnn_attention__to_copy": "attention",
             "triton_red_fused__to_copy__unsafe_view_add_mean_mul_pow_rsqrt_12": "triton",
             "Memcpy DtoD (Device -> Device)": "copy",
             "void at::native::vectorized_elementwise_kernel": "other"}
    assert {n: module.kind_of(n) for n in names} == names


def test_kernel_time_is_summed_per_step_by_name_and_kind():
    module = load("speed/decode_profile.py")
    cuda, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU

    def event(name, us, device=cuda):
        return SimpleNamespace(name=name, device_type=device, device_time_total=us)

    prof = SimpleNamespace(events=lambda: [
        event("nvjet_a", 300.0), event("nvjet_a", 100.0), event("triton_b", 40.0),
        event("aten::mm", 999.0, cpu)])  # host events do not count
    table = module.kernel_table(prof, steps=2)
    assert table["total_us"] == pytest.approx(220.0)
    assert table["kinds_us"] == pytest.approx({"gemm": 200.0, "triton": 20.0})
    assert [(k["name"], k["us_per_step"], k["calls_per_step"]) for k in table["kernels"]] == \
        [("nvjet_a", 200.0, 1.0), ("triton_b", 20.0, 0.5)]


def test_the_quick_shape_runs_on_a_cpu_and_writes_both_files(tmp_path):
    module = load("speed/decode_profile.py")
    assert module.main(["--out", str(tmp_path), "--quick", "--batch", "1", "--steps", "2",
                        "--prompt", "8"]) == 0
    found = json.loads((tmp_path / "decode_profile.json").read_text())
    assert found["compile_mode"] == "reduce-overhead" and found["floor_ms"] > 0
    (run,) = found["runs"]
    assert run["batch"] == 1 and run["ms_per_step"] > 0 and len(run["ms_per_step_runs"]) == 3
    assert run["kernel_ms_per_step"] == 0.0  # no GPU kernels on a CPU
    assert "## batch 1" in (tmp_path / "decode_profile.md").read_text()


def test_each_decode_attention_is_profiled_and_named(tmp_path):
    module = load("speed/decode_profile.py")
    assert module.main(["--out", str(tmp_path), "--quick", "--batch", "1", "--steps", "2",
                        "--prompt", "8", "--decode-attention", "sdpa", "filled"]) == 0
    found = json.loads((tmp_path / "decode_profile.json").read_text())
    assert [run["decode_attention"] for run in found["runs"]] == ["sdpa", "filled"]
    assert "## batch 1, filled attention" in (tmp_path / "decode_profile.md").read_text()


def test_pruned_variants_are_profiled_beside_dense_against_their_own_floor(tmp_path):
    module = load("speed/decode_profile.py")
    assert module.main(["--out", str(tmp_path), "--quick", "--batch", "1", "--steps", "2",
                        "--prompt", "8", "--variants", "dense", "uniform-20"]) == 0
    found = json.loads((tmp_path / "decode_profile.json").read_text())
    dense, pruned = found["runs"]
    assert (dense["variant"], pruned["variant"]) == ("dense", "uniform-20")
    assert dense["floor_ms"] == pytest.approx(found["floor_ms"])
    assert 0.7 * dense["floor_ms"] < pruned["floor_ms"] < 0.9 * dense["floor_ms"]
    assert pruned["widths"] != dense["widths"]
    assert "## uniform-20, batch 1" in (tmp_path / "decode_profile.md").read_text()


def test_flex_attention_block_masks_are_built_without_the_deprecated_compile_flag(monkeypatch):
    import warnings

    import transformers.masking_utils as masking

    module = load("speed/decode_profile.py")
    monkeypatch.setattr(masking, "create_block_mask", masking.create_block_mask)
    module.use_flex_attention_in_graphs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the flag's DeprecationWarning breaks a full graph
        mask = masking.create_block_mask(lambda b, h, q, kv: q >= kv, 1, 1, 4, 4,
                                         device="cpu", _compile=True)
    dense = mask.to_dense()
    assert dense.shape[-2:] == (1, 1) and bool(dense.all())  # one 128-block, causal: kept


def test_attn_choice_reaches_the_model_config():
    module = load("speed/models.py")
    model = module.build("smollm2-135m", torch.device("cpu"), torch.float32, quick=True,
                         attn="eager")
    assert model.config._attn_implementation == "eager"


def test_each_cache_step_sizes_the_static_cache_and_is_restored(tmp_path):
    module = load("speed/decode_profile.py")
    from lmprune.generation import fast

    before = fast.CACHE_STEP
    assert module.main(["--out", str(tmp_path), "--quick", "--batch", "1", "--steps", "2",
                        "--prompt", "8", "--cache-step", "256", "4"]) == 0
    assert fast.CACHE_STEP == before
    runs = json.loads((tmp_path / "decode_profile.json").read_text())["runs"]
    # prompt 8 + 3 new tokens = 11, rounded up to 256 and to 12
    assert [(r["cache_step"], r["cache_slots"]) for r in runs] == [(256, 256), (4, 12)]
    text = (tmp_path / "decode_profile.md").read_text()
    assert "256 cache slots" in text and "12 cache slots" in text


def test_a_cache_step_below_one_is_refused():
    module = load("speed/decode_profile.py")
    with pytest.raises(SystemExit):
        module.main(["--out", "unused", "--quick", "--cache-step", "0"])


def test_no_kernels_times_the_steps_without_the_profiler(tmp_path):
    module = load("speed/decode_profile.py")
    assert module.main(["--out", str(tmp_path), "--quick", "--batch", "1", "--steps", "2",
                        "--prompt", "8", "--no-kernels"]) == 0
    (run,) = json.loads((tmp_path / "decode_profile.json").read_text())["runs"]
    assert run["ms_per_step"] > 0 and "kernels" not in run and "kinds_us" not in run
    text = (tmp_path / "decode_profile.md").read_text()
    assert "## batch 1" in text and "ms/step wall" in text and "| kind |" not in text
