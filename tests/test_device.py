"""lmprune.device: where commands run, in which precision, and the errors when a device is absent.

The GPU branch is tested with ``torch.cuda`` mocked (this machine has no GPU): the decisions
(which device, which dtype, what accelerate is told) are what lmprune owns.
"""
from __future__ import annotations

import pytest
import torch

from lmprune import device as dev
from lmprune.cli.main import main
from lmprune.errors import LmpruneError


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine with two bf16-capable GPUs, as far as lmprune can tell."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(torch.device(d)))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Fake H200")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    return calls


def test_auto_is_the_cpu_without_a_gpu(no_gpu):
    assert dev.resolve_device("auto") == torch.device("cpu")
    assert dev.resolve_device(None) == torch.device("cpu")
    assert dev.resolve_dtype("auto", torch.device("cpu")) == torch.float32


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_a_gpu_is_a_clear_error(no_gpu, name):
    with pytest.raises(LmpruneError, match=rf"device {name} was requested but no CUDA GPU is "
                                           r"available .*use --device auto .* or --device cpu"):
        dev.resolve_device(name)


def test_bad_names_and_mps_without_mps(no_gpu):
    with pytest.raises(LmpruneError, match="device: must be one of auto, cpu, cuda, cuda:N, mps"):
        dev.resolve_device("gpu")
    with pytest.raises(LmpruneError, match="mps was requested but"):
        dev.resolve_device("mps")


def test_gpu_branch_picks_the_gpu_and_bfloat16(two_gpus):
    auto = dev.resolve_device("auto")
    assert auto == torch.device("cuda", 0)
    assert dev.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert dev.resolve_device("cpu") == torch.device("cpu")
    assert dev.resolve_dtype("auto", auto, "inference") == torch.bfloat16
    assert dev.resolve_dtype("auto", auto, "training") == torch.float32
    assert dev.resolve_dtype("float16", auto, "training") == torch.float16
    assert dev.resolve_dtype("auto", torch.device("cpu"), "inference") == torch.float32
    assert dev.describe_device(auto) == "cuda:0 (Fake H200)"
    with pytest.raises(LmpruneError, match=r"this machine has 2 GPU\(s\) \(cuda:0..cuda:1\)"):
        dev.resolve_device("cuda:2")


def test_float16_on_gpus_without_bfloat16(two_gpus, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert dev.resolve_dtype("auto", torch.device("cuda", 0)) == torch.float16


def test_accelerate_is_told_cpu_or_the_chosen_gpu(two_gpus, monkeypatch):
    assert dev.accelerator_kwargs("cpu") == {"cpu": True}
    assert dev.accelerator_kwargs("auto") == {"cpu": False} and two_gpus == []
    assert dev.accelerator_kwargs("cuda:1") == {"cpu": False}
    assert two_gpus == [torch.device("cuda", 1)]
    monkeypatch.setenv("WORLD_SIZE", "2")  # accelerate launch: each process has its GPU
    dev.accelerator_kwargs("cuda:1")
    assert two_gpus == [torch.device("cuda", 1)]


def test_models_are_placed_on_the_resolved_device_in_the_resolved_dtype(two_gpus):
    model = torch.nn.Linear(4, 4)
    moved = []
    model.to = lambda **kw: moved.append(kw) or model  # no real GPU to move to
    target = dev.resolve_device("auto")
    dev.place(model, target, dev.resolve_dtype("auto", target))
    assert moved == [{"device": torch.device("cuda", 0), "dtype": torch.bfloat16}]


def test_a_command_asked_for_cuda_fails_before_loading_anything(no_gpu, capsys, tmp_path):
    code = main(["prune", "--model", "tiny-llama", "--device", "cuda", "--out",
                 str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: device cuda was requested but no CUDA GPU")
    assert not (tmp_path / "out").exists()


def test_a_command_says_where_it_runs(no_gpu, capsys, tmp_path):
    code = main(["prune", "--model", "tiny-llama", "--method", "random", "--device", "cpu",
                 "--out", str(tmp_path / "out"), "eval.speed=false", "eval.zero_shot=[]",
                 "eval.max_windows=1", "data.num_samples=1", "data.seq_len=16"])
    out = capsys.readouterr().out
    assert code == 0 and "[prune] device: cpu, float32" in out


def test_attention_for_varied_shapes_leaves_cudnn_out_on_a_gpu_only():
    from lmprune.device import attention_for_varied_shapes

    before = torch.backends.cuda.cudnn_sdp_enabled()
    with attention_for_varied_shapes(torch.device("cpu")):
        assert torch.backends.cuda.cudnn_sdp_enabled() == before
    with attention_for_varied_shapes(torch.device("cuda", 0)):  # sets flags only: no GPU needed
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled()
        assert torch.backends.cuda.mem_efficient_sdp_enabled()
        assert torch.backends.cuda.math_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled() == before
