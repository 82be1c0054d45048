"""benchmarks/speed/decode_attention.py: its attention variants compute the masked attention
transformers runs at a decode step (checked on the CPU, where the CUDA-only backends are
replaced by the math one), its report, and its refusals."""
from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend

from bench_scripts import load

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def module():
    return load("speed/decode_attention.py")


def _masked_reference(q, k, v, mask):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def test_unmasked_attention_over_the_filled_slots_equals_the_masked_one(module):
    q, k, v, mask = module.tensors(2, 24, 17, "cpu", torch.float32)
    assert mask[..., :17].all() and not mask[..., 17:].any()
    expected = _masked_reference(q, k, v, mask)
    got = module._sdpa_nomask(SDPBackend.MATH)(q, k, v, mask, 17)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(module._manual(q, k, v, mask), expected, rtol=1e-5, atol=1e-5)
    # and the unfilled slots do matter without the mask: the comparison can fail
    unmasked = module._sdpa(SDPBackend.MATH)(q, k, v, None, 17)
    assert (unmasked - expected).abs().max() > 1e-3


def test_report_lists_times_and_failures(module):
    rows = [{"variant": "cudnn", "batch": 16, "us": 21.9, "vs_floor": 2.74,
             "max_abs_diff": 0.0039, "floor_us": 8.0},
            {"variant": "flash-nomask", "batch": 16, "error": "RuntimeError: no kernel"}]
    text = module.markdown({"device": "H200", "torch": "2.x", "cache": 160, "filled": 129,
                            "layers": 32, "bandwidth_gbs": 4200.0, "rows": rows})
    assert "| 16 | cudnn | 21.9 | 0.701 | 2.74x | 0.0039 |" in text
    assert "| 16 | flash-nomask | RuntimeError: no kernel |" in text


def test_refuses_a_filled_length_beyond_the_cache(module, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        module.main(["--out", str(tmp_path), "--cache", "16", "--filled", "17"])
    assert stop.value.code == 2 and "--filled must be" in capsys.readouterr().err


def test_refuses_without_a_gpu(module, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("the refusal is for machines without CUDA")
    assert module.main(["--out", str(tmp_path)]) == 2
    assert "run it on a GPU" in capsys.readouterr().err
