"""track_peak_memory on CPU, and how a peak is labelled."""
from __future__ import annotations

import psutil
import pytest
import torch

from lmprune.evaluation.memory import PeakMemory, track_peak_memory


def test_cpu_peak_is_the_process_rss_and_sees_an_allocation():
    before = psutil.Process().memory_info().rss
    with track_peak_memory("cpu") as box:
        assert box.result is None
        block = torch.ones(16 * 2**20)  # 64 MiB, written, so resident
    assert box.result.kind == "cpu_rss_peak"
    assert box.result.bytes >= before + 60 * 2**20
    del block


def test_default_device_is_cpu_and_the_result_is_filled_on_errors():
    with pytest.raises(ValueError), track_peak_memory() as box:
        raise ValueError("inside")
    assert box.result.kind == "cpu_rss_peak" and box.result.bytes > 0


def test_as_dict_labels_each_kind():
    assert PeakMemory(3 * 2**20, "cuda_max_allocated").as_dict() == {
        "mb": 3.0, "kind": "cuda_max_allocated",
        "label": "GPU peak allocated (torch.cuda.max_memory_allocated)"}
    cpu = PeakMemory(2**19, "cpu_rss_peak").as_dict()
    assert cpu["mb"] == 0.5
    assert cpu["label"] == "process RSS peak (CPU; not comparable to GPU figures)"
