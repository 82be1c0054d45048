"""track_peak_memory on CPU, and how a peak is labelled."""
from __future__ import annotations

from types import SimpleNamespace

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


# ------------------------------------------------------------- one model's memory, in isolation

def test_tensor_bytes_counts_each_storage_once():
    from lmprune.evaluation.memory import tensor_bytes

    weight = torch.zeros(10, 4)  # 160 bytes
    tied = torch.nn.Linear(4, 10, bias=False)
    tied.weight = torch.nn.Parameter(weight)
    other = torch.zeros(3, dtype=torch.float64)  # 24 bytes
    cache = SimpleNamespace(layers=[SimpleNamespace(keys=other, values=other[:1])])
    assert tensor_bytes(weight, tied, {"again": weight.view(40)}, cache) == 160 + 24


def test_cpu_model_memory_is_weights_plus_largest_activation_plus_cache():
    from lmprune.evaluation.memory import MODEL_CPU_KIND, model_peak_memory

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x = torch.ones(3, 4)
    weights = (4 * 8 + 8 + 8 * 2 + 2) * 4
    largest = 3 * 8 * 4  # the [3, 8] outputs of the first linear and the ReLU
    peak = model_peak_memory(model, lambda: model(x))
    assert peak.kind == MODEL_CPU_KIND and peak.bytes == weights + largest
    cache = torch.zeros(5, 5)  # 100 bytes
    peak = model_peak_memory(model, lambda: (model(x), cache), cache_of=lambda out: out[1])
    assert peak.bytes == weights + largest + 100
    assert all(not m._forward_hooks for m in model.modules())  # the hooks are gone


def test_a_smaller_model_never_measures_larger_whatever_the_process_holds():
    """The bug: process RSS measured the pruned model after the dense one had grown it."""
    from lmprune.evaluation.memory import model_peak_memory

    dense = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Linear(256, 64))
    pruned = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Linear(128, 64))
    x = torch.ones(2, 64)
    first = model_peak_memory(dense, lambda: dense(x))
    ballast = torch.ones(32 * 2**20)  # 128 MiB held by the process, not by either model
    second = model_peak_memory(pruned, lambda: pruned(x))
    assert second.bytes < first.bytes < 2**20
    del ballast
    assert "not process RSS" in second.as_dict()["label"]
