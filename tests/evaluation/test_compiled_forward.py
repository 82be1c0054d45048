"""The encoder's fast path: a compiled forward gives the eager outputs, is compiled once per
input shape, and ``measure_inference(compile=...)`` / ``lmprune bench`` report it."""
from __future__ import annotations

import json

import pytest
import torch

from lmprune.arch import describe
from lmprune.cli.main import main
from lmprune.errors import LmpruneError
from lmprune.evaluation.compiled import CompiledForward
from lmprune.evaluation.efficiency import batch_results, measure_inference
from lmprune.structures import Masks, remove
from lmprune.zoo.tiny import build_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def _pruned_bert():
    model = build_tiny("tiny-bert", "sequence-classification").eval()
    structure = describe(model)
    masks = Masks.ones(structure, ("heads", "neurons"))
    next(iter(masks.heads.values()))[1] = 0
    list(masks.neurons.values())[-1][::3] = 0
    remove(model, masks, structure)
    return model


def test_compiled_forward_equals_eager_and_compiles_once_per_shape():
    model = _pruned_bert()
    ids = torch.randint(0, model.config.vocab_size, (3, 12), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.inference_mode():
        eager = model(**inputs).logits.clone()
        fast = CompiledForward(model, "default")
        first = fast(**inputs).logits.clone()
        again = fast(**inputs).logits.clone()
    torch.testing.assert_close(first, eager, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(again, eager, rtol=1e-4, atol=1e-5)
    assert list(fast.first_call_s) == [(("attention_mask", (3, 12)), ("input_ids", (3, 12)))]


def test_unknown_compile_mode_is_refused_before_any_work():
    model = build_tiny("tiny-bert", "sequence-classification")
    with pytest.raises(LmpruneError, match="unknown compile mode 'fast'.*reduce-overhead"):
        measure_inference(model, batch_sizes=(2,), seq_len=4, compile="fast")
    with pytest.raises(LmpruneError, match="unknown compile mode"):
        CompiledForward(model, "turbo")


def test_cli_bench_measures_an_encoder_eager_and_compiled(capsys, tmp_path):
    code = main(["bench", "tiny-bert", "--modes", "eager,compile", "--batch-sizes", "2",
                 "--seq-len", "8", "--device", "cpu", "--json", str(tmp_path / "b.json")])
    out = capsys.readouterr().out
    assert code == 0 and "SAMPLES/S" in out and "compile (default)" in out
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["seq_len"] == 8 and set(saved["results"]) == {"eager", "compile"}
    compiled = saved["results"]["compile"]
    assert compiled["compile"] == "default" and "compile" not in saved["results"]["eager"]
    entry = batch_results(compiled)[2]
    assert entry["samples_per_s"] > 0 and entry["first_call_s"] > 0 and entry["repeats"] >= 10
    assert "first_call_s" not in batch_results(saved["results"]["eager"])[2]
    code = main(["bench", "tiny-bert", "--static-cache", "--device", "cpu"])
    assert code != 0 and "not a decoder" in capsys.readouterr().err


def test_decode_compile_mode_is_validated_and_reported():
    from lmprune.generation import Decoder
    from lmprune.generation.bench import measure_decoding

    model = build_tiny("tiny-llama", "causal-lm")
    with pytest.raises(LmpruneError, match="unknown compile mode 'turbo'"):
        Decoder(model, "compile", "turbo")
    speed = measure_decoding(model, 1, 4, new_tokens=2, mode="static", repeats=1,
                             compile_mode="max-autotune")
    assert speed.compile_mode is None  # only the compile mode compiles


def test_freezing_modes_compile_as_their_base_mode_with_freezing_on_only_while_called():
    from torch._inductor import config as inductor

    from lmprune.evaluation.compiled import (check_mode, compile_config, compile_kwargs,
                                             uses_graphs)

    assert compile_kwargs("reduce-overhead+freezing") == {"mode": "reduce-overhead"}
    assert compile_kwargs("max-autotune") == {"mode": "max-autotune"}
    assert [uses_graphs(m) for m in ("reduce-overhead+freezing", "max-autotune+freezing",
                                     "default", "max-autotune-no-cudagraphs")] == \
        [True, True, False, False]
    assert not inductor.freezing
    with compile_config("reduce-overhead+freezing"):
        assert inductor.freezing
    assert not inductor.freezing
    with compile_config("reduce-overhead"):
        assert not inductor.freezing
    with pytest.raises(LmpruneError, match="compile mode"):
        check_mode("default+freezing")


def test_a_forward_compiled_with_frozen_weights_gives_the_eager_outputs():
    model = _pruned_bert()
    ids = torch.randint(5, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    fast = CompiledForward(model, "reduce-overhead+freezing")
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        got = fast(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_a_frozen_forward_follows_weights_changed_after_compiling():
    """Frozen graphs hold the weights as constants and Dynamo reuses them for the same model
    (a new wrapper too): an in-place edit must recompile, not return the old model's outputs."""
    model = _pruned_bert()
    ids = torch.randint(5, 100, (2, 12), generator=torch.Generator().manual_seed(1))
    fast = CompiledForward(model, "reduce-overhead+freezing")
    with torch.no_grad():
        before = fast(input_ids=ids).logits.clone()
        model.classifier.weight.mul_(-2.0)
        expected = model(input_ids=ids).logits
        assert not torch.allclose(before, expected, atol=1e-3)
        with pytest.warns(UserWarning, match="weights changed since a \\+freezing graph"):
            got = fast(input_ids=ids).logits.clone()
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        assert fast.first_call_s  # the recompiling call was timed as a first call again
        model.bert.embeddings.word_embeddings.weight.data = \
            model.bert.embeddings.word_embeddings.weight.data.flip(0).contiguous()
        with pytest.warns(UserWarning):  # a tensor swapped in, through a new wrapper
            again = CompiledForward(model, "reduce-overhead+freezing")(input_ids=ids).logits
        torch.testing.assert_close(again, model(input_ids=ids).logits, rtol=1e-4, atol=1e-5)


def test_unchanged_weights_keep_their_frozen_graph():
    import warnings

    from lmprune.evaluation.compiled import refresh_frozen, weights_version

    model = _pruned_bert()
    assert weights_version(model) == weights_version(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert refresh_frozen(model) is False  # first sight: recorded
        assert refresh_frozen(model) is False
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    with pytest.warns(UserWarning):
        assert refresh_frozen(model) is True
    assert refresh_frozen(model) is False
