"""Decode-step attention over the filled slots of a static cache
(``lmprune.generation.filled_attention``): equal to transformers' masked SDPA, blind to what
the empty slots hold, listing only the blocks that hold keys, and giving greedy
``generate``'s tokens through the fast path (eagerly on the CPU; the compiled kernel is
measured on a GPU, BENCHMARKS.md)."""
from __future__ import annotations

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from lmprune.cli.generate import DECODE_ATTENTIONS
from lmprune.errors import LmpruneError
from lmprune.generation import fast_generate
from lmprune.generation.bench import measure_decoding
from lmprune.generation.fast import ATTENTIONS, Decoder
from lmprune.generation.filled_attention import (BLOCK, NAME, block_mask, filled_attention,
                                                 use_filled_attention)
from lmprune.zoo import build_tiny

pytestmark = pytest.mark.usefixtures("one_thread")

HEADS, KV_HEADS, HEAD_DIM, SLOTS = 6, 2, 16, 200


class _Attention(torch.nn.Module):
    num_key_value_groups = HEADS // KV_HEADS
    is_causal = True


def _qkv(batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, HEADS, 1, HEAD_DIM, generator=g)
    k = torch.randn(batch, KV_HEADS, SLOTS, HEAD_DIM, generator=g)
    return q, k, torch.randn(k.shape, generator=g)


def _masked(q, k, v, positions):
    mask = torch.arange(SLOTS).view(1, 1, 1, SLOTS) <= positions.view(-1, 1, 1, 1)
    out, _ = sdpa_attention_forward(_Attention(), q, k, v, mask, scaling=HEAD_DIM ** -0.5)
    return out


@pytest.mark.parametrize("positions", [[0, 0], [63, 63], [64, 64], [130, 130], [199, 199],
                                       [5, 150]])
def test_equals_masked_sdpa_with_grouped_heads(positions):
    q, k, v = _qkv(len(positions))
    positions = torch.tensor(positions)
    got, weights = filled_attention(_Attention(), q, k, v, None, scaling=HEAD_DIM ** -0.5,
                                    position_ids=positions.view(-1, 1))
    assert weights is None and got.shape == (len(positions), 1, HEADS, HEAD_DIM)
    torch.testing.assert_close(got, _masked(q, k, v, positions), rtol=1e-5, atol=1e-5)


def test_a_sliding_window_is_masked_as_transformers_masks_it():
    q, k, v = _qkv(2)
    positions, window = torch.tensor([150, 30]), 40
    slots = torch.arange(SLOTS).view(1, 1, 1, SLOTS)
    mask = (slots <= positions.view(-1, 1, 1, 1)) & (slots > positions.view(-1, 1, 1, 1) - window)
    expected, _ = sdpa_attention_forward(_Attention(), q, k, v, mask)
    got, _ = filled_attention(_Attention(), q, k, v, None, position_ids=positions.view(-1, 1),
                              sliding_window=window)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_what_it_does_not_implement_is_refused():
    q, k, v = _qkv(1)
    with pytest.raises(LmpruneError, match="does not implement softcap"):
        filled_attention(_Attention(), q, k, v, None, position_ids=torch.tensor([[3]]),
                         softcap=30.0)
    with pytest.raises(LmpruneError, match="needs the decoded position"):
        filled_attention(_Attention(), q, k, v, None)  # would attend over empty slots


def test_what_the_empty_slots_hold_changes_nothing():
    q, k, v = _qkv(2)
    position = torch.tensor([[70], [70]])
    before, _ = filled_attention(_Attention(), q, k, v, None, position_ids=position)
    k[:, :, 71:] = 1e4  # keys that would take all the attention if they were read
    v[:, :, 71:] = -1e4
    after, _ = filled_attention(_Attention(), q, k, v, None, position_ids=position)
    torch.testing.assert_close(after, before)


def test_block_mask_lists_only_the_blocks_holding_keys():
    mask = block_mask(torch.tensor([0, BLOCK - 1, BLOCK, 3 * BLOCK + 5]), 4, 4 * BLOCK)
    assert mask.kv_num_blocks.flatten().tolist() == [1, 1, 2, 4]
    full = block_mask(torch.tensor([10 * BLOCK]), 1, 4 * BLOCK)  # past the end: every block
    assert full.kv_num_blocks.flatten().tolist() == [4]


def test_several_queries_fall_back_to_sdpa_with_the_mask():
    q, k, v = _qkv(2)
    q = torch.cat([q, q.flip(0)], dim=2)  # two queries per sequence: a prompt, not a step
    mask = torch.ones(2, 1, 2, SLOTS, dtype=torch.bool)
    mask[..., 50:] = False
    got, _ = filled_attention(_Attention(), q, k, v, mask, position_ids=torch.tensor([[1, 2]] * 2))
    expected, _ = sdpa_attention_forward(_Attention(), q, k, v, mask)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2", "tiny-mistral"])
def test_fast_path_tokens_equal_greedy_generate_across_blocks(name):
    model = build_tiny(name, "causal-lm")
    ids = torch.randint(3, 128, (2, 58), generator=torch.Generator().manual_seed(1))
    expected = model.generate(ids, max_new_tokens=12, do_sample=False,
                              attention_mask=torch.ones_like(ids))  # positions 58-69: 2 blocks
    got = fast_generate(model, ids, 12, compile=False, attention="filled")
    assert torch.equal(got, expected)
    assert model.config._attn_implementation == "sdpa"  # restored after the loop


def test_compiled_decode_step_gives_greedy_tokens():
    """The compiled step (inductor's FlexAttention kernel; CUDA graphs on a GPU, where this
    runs when there is one) across a block boundary, with grouped key/value heads."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_tiny("tiny-llama", "causal-lm").to(device)
    ids = torch.randint(3, 128, (2, 60), generator=torch.Generator().manual_seed(2)).to(device)
    expected = model.generate(ids, max_new_tokens=8, do_sample=False,
                              attention_mask=torch.ones_like(ids))
    got = fast_generate(model, ids, 8, compile=True, attention="filled")
    assert torch.equal(got, expected)


def test_which_decoders_use_it():
    model = build_tiny("tiny-llama", "causal-lm")
    assert Decoder(model, "static", attention="filled").filled
    assert not Decoder(model, "static").filled  # opt-in
    assert not Decoder(model, "compile").filled
    assert not Decoder(model, "static", attention="sdpa").filled
    with pytest.warns(UserWarning, match="not used \\(the eager mode has no static cache"):
        assert not Decoder(model, "eager", attention="filled").filled
    with pytest.raises(LmpruneError, match="unknown decode attention 'flash'"):
        Decoder(model, "static", attention="flash")
    model.config._attn_implementation = "eager"
    with pytest.warns(UserWarning, match="its attention is eager, not sdpa"):
        assert not Decoder(model, "static", attention="filled").filled
    with use_filled_attention(model) as used:
        assert not used and model.config._attn_implementation == "eager"


def test_context_sets_and_restores_the_implementation():
    model = build_tiny("tiny-llama", "causal-lm")
    with use_filled_attention(model) as used:
        assert used and model.config._attn_implementation == NAME
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(RuntimeError), use_filled_attention(model):
        raise RuntimeError("a failed loop")
    assert model.config._attn_implementation == "sdpa"


def test_cli_generate_and_bench_take_the_decode_attention(capsys, tmp_path):
    from lmprune.cli.main import main

    args = ["generate", "tiny-llama", "--prompt", "hello", "--max-new-tokens", "4",
            "--device", "cpu"]
    assert main(args) == 0
    plain = capsys.readouterr().out.splitlines()[-1]
    assert main([*args, "--decode-attention", "filled"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == plain  # the same text
    assert main(["bench", "tiny-llama", "--modes", "static", "--batch-sizes", "1",
                 "--prompt-len", "8", "--new-tokens", "3", "--repeats", "1",
                 "--decode-attention", "filled", "--json", str(tmp_path / "b.json")]) == 0
    assert '"attention": "filled"' in (tmp_path / "b.json").read_text()
    assert main([*args, "--decode-attention", "flash"]) == 2


def test_measurements_and_cli_name_the_attention():
    assert DECODE_ATTENTIONS == ATTENTIONS
    model = build_tiny("tiny-llama", "causal-lm")
    speed = measure_decoding(model, 1, 8, 3, "static", 1, attention="filled")
    assert speed.attention == "filled"
    assert measure_decoding(model, 1, 8, 3, "static", 1).attention == "sdpa"


def test_only_plain_causal_decoders_are_supported():
    from lmprune.generation.filled_attention import unsupported

    assert unsupported(build_tiny("tiny-mistral", "causal-lm")) is None  # sliding window kept
    reason = unsupported(build_tiny("tiny-t5"))
    assert reason.startswith("model type 't5' is not one of llama")
