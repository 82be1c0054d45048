"""LoRA on pruned models: which modules get adapters, how many parameters, exact merging."""
from __future__ import annotations

import pytest
import torch
from recovery_helpers import logits, pruned_tiny, tiny_run

import lmprune
from lmprune.errors import LmpruneError
from lmprune.recovery import add_lora, merge_lora, resolve_targets
from lmprune.recovery.lora import count_params

TEXT = "Count: to three. one two three"


def test_removed_attention_sublayer_has_no_targets(pruned_dir):
    model = lmprune.load_pretrained(pruned_dir)
    targets = resolve_targets(model, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                      "up_proj", "down_proj"])
    assert [t for t in targets if "self_attn" in t] == [
        f"model.layers.1.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
    assert sum(".mlp." in t for t in targets) == 6  # both FFNs survive
    assert len(targets) == 10


def test_targets_that_match_nothing_are_an_error():
    model, _ = pruned_tiny()
    with pytest.raises(LmpruneError, match=r"'q_prj' matches no linear layer.*gate_proj.*q_proj"):
        resolve_targets(model, ["q_prj", "v_proj"])
    with pytest.raises(LmpruneError, match="'query', 'value' matches no linear layer"):
        resolve_targets(model, ["query", "value"])  # BERT's names on a LLaMA
    with pytest.raises(LmpruneError, match="recovery.targets is empty"):
        resolve_targets(model, [])


def test_trainable_parameters_are_r_times_in_plus_out(pruned_dir):
    model = lmprune.load_pretrained(pruned_dir)
    run = tiny_run()
    expected = sum(run.recovery.r * (m.in_features + m.out_features)
                   for name, m in model.named_modules()
                   if name in resolve_targets(model, run.recovery.targets))
    base = count_params(model)[1]
    peft_model = add_lora(model, run.recovery)
    trainable, total = count_params(peft_model)
    # layer 0 has only its FFN (96 - 0 neurons), layer 1 attention + FFN with 76 neurons:
    # 8 * [(64+96)*3] + 8 * [(64+64) + (64+16)*2 + (64+64)] + 8 * [(64+76)*3]
    assert trainable == expected == 3840 + 3328 + 3360
    assert total == base + trainable


def test_merged_model_equals_the_adapted_one(pruned_dir, tokenizer):
    model = lmprune.load_pretrained(pruned_dir)
    before = logits(model, TEXT, tokenizer)
    peft_model = add_lora(model, tiny_run().recovery).eval()
    assert torch.equal(logits(peft_model, TEXT, tokenizer), before)  # B = 0 at the start
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    adapted = logits(peft_model, TEXT, tokenizer)
    merged = merge_lora(peft_model)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert (adapted - before).abs().max() > 1e-2  # the adapters do change the function
    assert (logits(merged, TEXT, tokenizer) - adapted).abs().max() <= 1e-5
