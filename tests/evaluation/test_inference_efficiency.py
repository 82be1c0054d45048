"""measure_inference on tiny encoder, encoder-decoder and decoder models."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lmprune.errors import LmpruneError
from lmprune.evaluation.efficiency import batch_results, measure_inference
from lmprune.zoo.tiny import build_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def _record_inputs(model):
    seen = []

    def hook(module, args, kwargs):
        seen.append({k: (tuple(v.shape) if torch.is_tensor(v) else v) for k, v in kwargs.items()})

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


@pytest.mark.parametrize("name,task", [("tiny-bert", "sequence-classification"),
                                       ("tiny-roberta", "question-answering"),
                                       ("tiny-t5", "seq2seq-lm"),
                                       ("tiny-llama", "causal-lm")])
def test_positive_numbers_for_every_kind_of_model(name, task):
    model = build_tiny(name, task).train()
    result = measure_inference(model, batch_sizes=(2, 4), seq_len=16, warmup=1, repeats=2)
    assert result["seq_len"] == 16 and result["device"] == "cpu"
    assert sorted(batch_results(result)) == [2, 4]
    for batch, entry in batch_results(result).items():
        assert entry["repeats"] == 2 and entry["samples_per_s"] > 0 and entry["latency_ms"] > 0
        # throughput is batch / mean latency
        assert entry["samples_per_s"] * entry["latency_ms"] / 1000 == pytest.approx(batch)
        assert entry["peak_memory"]["kind"] == "cpu_tensor_bytes" and entry["peak_memory"]["mb"] > 0
    assert model.training  # the caller's mode is restored


def test_inputs_per_kind_of_model():
    t5 = build_tiny("tiny-t5", "seq2seq-lm")
    seen = _record_inputs(t5)
    measure_inference(t5, batch_sizes=(3,), seq_len=8, warmup=1, repeats=1)
    assert len(seen) == 3  # one warm-up, the memory run, one timed
    assert seen[0]["input_ids"] == (3, 8) and seen[0]["attention_mask"] == (3, 8)
    assert seen[0]["decoder_input_ids"] == (3, 1) and seen[0]["use_cache"] is False
    llama = build_tiny("tiny-llama")
    seen = _record_inputs(llama)
    measure_inference(llama, batch_sizes=(2,), seq_len=5, warmup=0, repeats=3)
    assert len(seen) == 4 and seen[0]["input_ids"] == (2, 5) and seen[0]["use_cache"] is False
    assert "decoder_input_ids" not in seen[0]
    bert = build_tiny("tiny-bert", "sequence-classification")
    seen = _record_inputs(bert)
    measure_inference(bert, batch_sizes=(2,), seq_len=5, warmup=0, repeats=1)
    assert set(seen[0]) == {"input_ids", "attention_mask"}


def test_max_seconds_keeps_one_timed_repeat():
    model = build_tiny("tiny-bert", "sequence-classification")
    seen = _record_inputs(model)
    result = measure_inference(model, batch_sizes=(2, 4), seq_len=8, warmup=3, repeats=50,
                               max_seconds=1e-9)
    assert [e["repeats"] for e in batch_results(result).values()] == [1, 1]
    assert len(seen) == 6  # per batch size: a warm-up (it used up the time), the memory run, a timed one


class _RunsOutOfMemory(torch.nn.Module):
    """Fails like CUDA does from batch size 4 on; other errors are bugs and must propagate."""

    def __init__(self, error=torch.cuda.OutOfMemoryError("CUDA out of memory. Tried ...")):
        super().__init__()
        self.config, self.error = SimpleNamespace(vocab_size=10), error
        self.linear = torch.nn.Linear(1, 1)

    def forward(self, input_ids, attention_mask):
        if input_ids.shape[0] >= 4:
            raise self.error
        return self.linear(attention_mask[..., None].float())


def test_out_of_memory_is_recorded_and_larger_batches_skipped():
    result = measure_inference(_RunsOutOfMemory(), batch_sizes=(2, 4, 8), seq_len=3, warmup=0,
                               repeats=1)
    assert result["2"]["samples_per_s"] > 0
    assert result["4"]["error"] == "out of memory" and result["4"]["samples_per_s"] is None
    assert result["8"]["error"] == "skipped: batch size 4 ran out of memory"


def test_other_errors_propagate_and_bad_arguments_are_explained():
    with pytest.raises(RuntimeError, match="a bug"):
        measure_inference(_RunsOutOfMemory(RuntimeError("a bug")), batch_sizes=(4,), seq_len=3)
    model = build_tiny("tiny-bert", "sequence-classification")
    with pytest.raises(LmpruneError, match=r"batch_sizes must be positive integers.*seq_len"):
        measure_inference(model, batch_sizes=(0,), seq_len=0)
    with pytest.raises(LmpruneError, match="max_seconds must be positive"):
        measure_inference(model, batch_sizes=(1,), max_seconds=0)
