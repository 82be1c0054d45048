"""The fast generation path gives the tokens of greedy ``model.generate``, on every tiny
decoder, dense and pruned, with either decode attention (per-layer head counts, removed sublayers including layer 0's
attention, saved and reloaded as remote code); and ``lmprune generate`` / ``lmprune bench``
run end to end."""
from __future__ import annotations

import json

import pytest
import torch

from lmprune.arch import describe
from lmprune.cli.main import main
from lmprune.errors import LmpruneError
from lmprune.generation import fast_generate
from lmprune.generation.bench import measure_decoding
from lmprune.generation.fast import static_cache
from lmprune.structures import Masks, remove
from lmprune.structures.export import load_pretrained, save_pretrained
from lmprune.zoo import build_tiny

pytestmark = pytest.mark.usefixtures("one_thread")

DECODERS = ["tiny-llama", "tiny-qwen2", "tiny-mistral"]
PRUNINGS = ["dense", "heads-per-layer", "attention-0", "ffn-1", "saved"]


def _pruned(name: str, pruning: str):
    model = build_tiny(name, "causal-lm")
    if pruning == "dense":
        return model
    structure = describe(model)
    masks = Masks.ones(structure, ("heads", "neurons", "attention", "ffn"))
    if pruning in ("heads-per-layer", "saved"):  # layer 0 keeps 3 of 4 heads per group, 1: 2
        masks.heads["layers.0.attn"][torch.tensor([0, 4])] = 0
        masks.heads["layers.1.attn"][torch.tensor([0, 1, 4, 5])] = 0
        masks.neurons["layers.1.ffn"][:40] = 0
    if pruning in ("attention-0", "saved"):
        masks.attention["layers.0.attn"] = torch.tensor(0.0)
    if pruning == "ffn-1":
        masks.ffn["layers.1.ffn"] = torch.tensor(0.0)
    remove(model, masks, structure)
    return model


def _reference(model, ids, new_tokens: int, **kwargs) -> torch.Tensor:
    return model.generate(ids, max_new_tokens=new_tokens, do_sample=False,
                          attention_mask=torch.ones_like(ids), **kwargs)


def _ids(batch=3, length=7, seed=0) -> torch.Tensor:
    return torch.randint(3, 128, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pruning", PRUNINGS)
@pytest.mark.parametrize("name", DECODERS)
def test_static_cache_tokens_equal_greedy_generate(name, pruning, tmp_path):
    model = _pruned(name, pruning)
    if pruning == "saved":
        model = load_pretrained(save_pretrained(model, tmp_path / "m").path)
    ids = _ids()
    expected = _reference(model, ids, 20)
    for static, attention in ((False, "sdpa"), (True, "sdpa"), (True, "filled")):
        got = fast_generate(model, ids, 20, compile=False, static_cache=static,
                            attention=attention)
        assert torch.equal(got, expected), (static, attention, got, expected)


def test_end_of_sequence_handling_matches_generate():
    model = build_tiny("tiny-llama", "causal-lm")
    ids = _ids()
    plain = _reference(model, ids, 20, eos_token_id=None)
    eos = int(plain[0, 12])  # a token the first row emits mid-way
    expected = _reference(model, ids, 20, eos_token_id=eos, pad_token_id=0)
    got = fast_generate(model, ids, 20, compile=False, eos_token_id=eos, pad_token_id=0)
    assert torch.equal(got, expected)
    single = ids[:1]  # a lone row that stops: the output ends at its end-of-sequence token
    expected = _reference(model, single, 20, eos_token_id=eos, pad_token_id=0)
    got = fast_generate(model, single, 20, compile=False, eos_token_id=eos, pad_token_id=0)
    assert torch.equal(got, expected) and got.shape[1] < 27


def test_static_caches_are_reused_and_reset():
    model = build_tiny("tiny-llama", "causal-lm")
    first = static_cache(model, 2, 30)
    fast_generate(model, _ids(2), 5, compile=False)  # fills the (2, 256) cache
    assert static_cache(model, 2, 200) is first  # same 256-token bucket, reset
    assert int(first.get_seq_length()) == 0
    assert static_cache(model, 3, 30) is not first


def test_the_fast_path_refuses_what_it_cannot_do():
    model = build_tiny("tiny-llama", "causal-lm")
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[0, 0] = 0
    with pytest.raises(LmpruneError, match="prompts of equal length without padding"):
        fast_generate(model, ids, 4, attention_mask=mask)
    with pytest.raises(LmpruneError, match="max_new_tokens must be >= 1"):
        fast_generate(model, ids, 0)
    with pytest.raises(LmpruneError, match="decoder-only causal LMs, not t5"):
        fast_generate(build_tiny("tiny-t5"), ids, 4)
    with pytest.raises(LmpruneError, match="compile needs the static cache"):
        fast_generate(model, ids, 4, compile=True, static_cache=False)


@pytest.mark.slow
def test_compiled_decode_step_tokens_equal_greedy_generate(tmp_path):
    """torch.compile (fullgraph) of the decode step works on a pruned remote-code model with
    a removed attention sublayer; on a CPU this is inductor only (no CUDA graphs), ~1 min."""
    model = load_pretrained(save_pretrained(_pruned("tiny-llama", "saved"), tmp_path / "m").path)
    ids = _ids(2)
    assert torch.equal(fast_generate(model, ids, 12, compile=True), _reference(model, ids, 12))


def test_measure_decoding_reports_prefill_and_decode_apart():
    model = build_tiny("tiny-llama", "causal-lm")
    r = measure_decoding(model, batch_size=2, prompt_len=8, new_tokens=5, mode="static",
                         repeats=2)
    assert (r.mode, r.batch_size, r.prompt_len, r.new_tokens, r.repeats) == ("static", 2, 8, 5, 2)
    assert r.prefill_tokens_per_s == pytest.approx(2 * 8 / (r.prefill_ms / 1000))
    assert r.decode_tokens_per_s == pytest.approx(2 / (r.decode_ms_per_step / 1000))
    assert r.device == "cpu" and r.memory_kind.startswith("cpu")
    with pytest.raises(LmpruneError, match="new_tokens >= 2"):
        measure_decoding(model, 1, 8, new_tokens=1)


def test_cli_generate_and_bench(capsys, tmp_path):
    code = main(["generate", "tiny-llama", "--prompt", "hello", "--prompt", "to be",
                 "--max-new-tokens", "5", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0 and "[generate] device: cpu, float32" in out
    assert out.count("[generate] 5 tokens in") == 2 and "\nhello" in out and "\nto be" in out
    code = main(["bench", "tiny-llama", "--modes", "eager,static", "--batch-sizes", "1,2",
                 "--prompt-len", "8", "--new-tokens", "3", "--repeats", "1", "--json",
                 str(tmp_path / "b.json")])
    out = capsys.readouterr().out
    assert code == 0 and "DECODE TOK/S" in out
    results = json.loads((tmp_path / "b.json").read_text())["results"]
    assert [(r["mode"], r["batch_size"]) for r in results] == [
        ("eager", 1), ("eager", 2), ("static", 1), ("static", 2)]
    code = main(["bench", "tiny-llama", "--modes", "fast"])
    assert code == 2 and "--modes: unknown ['fast']" in capsys.readouterr().err


@pytest.mark.slow
def test_a_decode_step_compiled_with_frozen_weights_gives_greedy_tokens():
    """``reduce-overhead+freezing``: the weights become graph constants (q/k/v and gate/up
    products may be concatenated); the tokens stay greedy generate's (CPU: inductor only)."""
    from torch._dynamo.utils import counters

    from lmprune.generation.fast import Decoder

    model = build_tiny("tiny-llama", "causal-lm")
    ids = _ids(2)
    expected = _reference(model, ids, 8)
    for mode in ("reduce-overhead", "reduce-overhead+freezing"):  # same model and shapes
        graphs = counters["stats"]["unique_graphs"]
        decoder = Decoder(model, "compile", mode)
        first = decoder.prefill(ids, 8)
        got = torch.cat([ids, decoder.decode(first, 7)], dim=1)
        assert torch.equal(got, expected), mode
        # each mode compiles its own graph: freezing is not skipped by reusing the other's
        assert counters["stats"]["unique_graphs"] > graphs, mode
    assert not torch._inductor.config.freezing  # only while the step runs
    with torch.no_grad():  # weights edited after freezing: the step recompiles, tokens follow
        for layer in model.model.layers:
            layer.mlp.down_proj.weight.mul_(-3.0)
    expected = _reference(model, ids, 8)
    decoder = Decoder(model, "compile", "reduce-overhead+freezing")
    with pytest.warns(UserWarning, match="weights changed"):
        got = torch.cat([ids, decoder.decode(decoder.prefill(ids, 8), 7)], dim=1)
    assert torch.equal(got, expected)
