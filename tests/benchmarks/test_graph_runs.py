"""benchmarks/speed/measure.graph_runs: counts CUDA-graph warm-ups, recordings and replays
while inside and puts torch's methods back afterwards; a compiled encoder measurement carries
the counts (all zero on a CPU, where no graph runs)."""
from __future__ import annotations

import pytest
from torch._inductor import cudagraph_trees as trees

from bench_scripts import load

pytestmark = pytest.mark.usefixtures("one_thread")


def test_counts_each_kind_and_restores_the_methods(monkeypatch):
    measure = load("speed/measure.py")
    monkeypatch.setattr(trees.CUDAGraphNode, "run_graph", lambda self: "replayed")
    monkeypatch.setattr(trees.CUDAWarmupNode, "run", lambda self, inputs: "warmed")
    fake_replay, fake_warmup = trees.CUDAGraphNode.run_graph, trees.CUDAWarmupNode.run
    with measure.graph_runs() as counts:
        assert trees.CUDAGraphNode.run_graph(object()) == "replayed"
        assert trees.CUDAGraphNode.run_graph(object()) == "replayed"
        assert trees.CUDAWarmupNode.run(object(), []) == "warmed"
    assert counts == {"warmup": 1, "record": 0, "replay": 2}
    assert trees.CUDAGraphNode.run_graph is fake_replay
    assert trees.CUDAWarmupNode.run is fake_warmup


def test_compiled_encoder_measurement_records_the_counts():
    measure = load("speed/measure.py")
    models = load("speed/models.py")
    import torch

    model = models.build("roberta-base", torch.device("cpu"), torch.float32, quick=True)
    out = measure.encoder(model, [2], 8, quick=True, compile="default")
    assert out["cudagraph_runs"] == {"warmup": 0, "record": 0, "replay": 0}
    assert out["2"]["samples_per_s"] > 0
    assert "cudagraph_runs" not in measure.encoder(model, [2], 8, quick=True)
