"""DeciLM (Nemotron-NAS) export: the config says what vLLM's and llama.cpp's readers will
build, the weights have exactly those shapes, transformers loads it to the same logits, and
models that do not fit are refused with the reason."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

from lmprune import load_pretrained
from lmprune.arch import describe
from lmprune.cli.main import main
from lmprune.errors import LmpruneError
from lmprune.generation import fast_generate
from lmprune.structures import Masks, remove
from lmprune.structures.decilm import decilm_fit, save_decilm
from lmprune.structures.export import save_pretrained
from lmprune.zoo import build_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def _llama(heads=8, kv=4, ffn=768, layers=4, tie=False):
    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=ffn,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv, head_dim=8, max_position_embeddings=64,
                         tie_word_embeddings=tie)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def _fitting(tie=False):
    """KV groups, FFN widths in steps of 256, removed sublayers (layer 0's attention too)."""
    model = _llama(tie=tie)
    structure = describe(model)
    masks = Masks.ones(structure, ("kv_groups", "neurons", "attention", "ffn"))
    masks.neurons["layers.1.ffn"][:256] = 0
    masks.neurons["layers.3.ffn"][256:] = 0
    masks.attention["layers.0.attn"] = torch.tensor(0.0)
    masks.ffn["layers.2.ffn"] = torch.tensor(0.0)
    masks.kv_groups["layers.3.attn"][torch.tensor([1, 2])] = 0  # 2 of 4 groups: 4 query heads
    masks.kv_groups["layers.1.attn"][torch.tensor([0, 3])] = 0
    masks.kv_groups["layers.2.attn"][torch.tensor([0, 1])] = 0
    remove(model, masks, structure)
    return model


def _read_like_a_server(directory):
    """What vLLM's DeciLMDecoderLayer / llama.cpp's DeciModel derive from config.json."""
    config = json.loads((directory / "config.json").read_text())
    heads, hidden = config["num_attention_heads"], config["hidden_size"]
    layers = []
    for block in config["block_configs"]:
        attn, ffn = block["attention"], block["ffn"]
        kv = None if attn["no_op"] else heads // attn["n_heads_in_group"]
        width = None
        if not ffn["no_op"]:
            width = int(2 * ffn["ffn_mult"] * hidden / 3)
            width += (256 - width % 256) % 256
        layers.append((kv, width))
    return config, layers


def test_config_and_weights_are_what_servers_read(tmp_path):
    model = _fitting()
    saved = save_decilm(model, tmp_path / "m")
    config, layers = _read_like_a_server(saved.path)
    assert (config["architectures"], config["model_type"]) == (["DeciLMForCausalLM"], "nemotron-nas")
    assert config["num_attention_heads"] == 4 and config["head_dim"] == 8
    assert layers == [(None, 768), (2, 512), (2, None), (2, 256)]
    with safe_open(saved.path / "model.safetensors", "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    for i, (kv, width) in enumerate(layers):
        prefix = f"model.layers.{i}"
        if kv is None:
            assert not any(k.startswith(f"{prefix}.self_attn") or k.startswith(f"{prefix}.input_")
                           for k in shapes)
        else:
            assert shapes[f"{prefix}.self_attn.q_proj.weight"] == (4 * 8, 64)
            assert shapes[f"{prefix}.self_attn.k_proj.weight"] == (kv * 8, 64)
        if width is None:
            assert not any(k.startswith(f"{prefix}.mlp") or k.startswith(f"{prefix}.post_")
                           for k in shapes)
        else:
            assert shapes[f"{prefix}.mlp.down_proj.weight"] == (64, width)
    parsed = AutoConfig.from_pretrained(saved.path, trust_remote_code=True)
    assert parsed.block_configs[0].attention.no_op and parsed.block_configs[1].ffn.ffn_mult == 12.0


@pytest.mark.parametrize("tie", [False, True])
def test_transformers_and_lmprune_load_it_to_the_same_logits(tmp_path, tie):
    model = _fitting(tie=tie)
    saved = save_decilm(model, tmp_path / "m")
    ids = torch.randint(0, 64, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(ids).logits
        remote = AutoModelForCausalLM.from_pretrained(saved.path, trust_remote_code=True).eval()
        ours = load_pretrained(saved.path)
        assert torch.allclose(remote(ids).logits, expected, atol=1e-5)
        assert torch.allclose(ours(ids).logits, expected, atol=1e-5)
    reference = ours.generate(ids, max_new_tokens=8, do_sample=False,
                              attention_mask=torch.ones_like(ids))
    assert torch.equal(fast_generate(ours, ids, 8, compile=False), reference)


def test_models_that_do_not_fit_are_refused_with_the_reason(tmp_path):
    model = _llama()
    structure = describe(model)
    masks = Masks.ones(structure, ("heads", "neurons"))
    masks.heads["layers.0.attn"][torch.tensor([0, 2, 4, 6])] = 0  # 1 of 2 per group
    masks.neurons["layers.1.ffn"][:100] = 0
    remove(model, masks, structure)
    fit = decilm_fit(model)
    assert not fit.fits
    assert any("query heads differ between layers (layers.0.attn 4, layers.1.attn 8" in p
               for p in fit.problems)
    assert any("layers.1.ffn keeps 668 neurons" in p and "prune.round_to=256" in p
               for p in fit.problems)
    with pytest.raises(LmpruneError, match="does not fit the DeciLM format"):
        save_decilm(model, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    qwen = decilm_fit(build_tiny("tiny-qwen2", "causal-lm"))
    assert "model_type 'qwen2'" in qwen.problems[0]


def test_a_head_size_llama_cpp_cannot_derive_is_a_note():
    model = _llama(kv=8, ffn=512, layers=2)
    structure = describe(model)
    masks = Masks.ones(structure, ("heads",))
    for site in structure.attention:
        masks.heads[site.name][:2] = 0  # 6 heads of 8 columns in a hidden size of 64
    remove(model, masks, structure)
    fit = decilm_fit(model)
    assert fit.fits and fit.config["num_attention_heads"] == 6
    assert "llama.cpp" in fit.notes[0] and "(64 / 6)" in fit.notes[0]


def test_cp_converts_and_explains(tmp_path, capsys):
    src = save_pretrained(_fitting(), tmp_path / "src").path
    assert main(["cp", str(src), str(tmp_path / "dec"), "--format", "decilm"]) == 0
    assert "(decilm format" in capsys.readouterr().out
    assert json.loads((tmp_path / "dec" / "config.json").read_text())["model_type"] == "nemotron-nas"
    qwen = save_pretrained(build_tiny("tiny-qwen2"), tmp_path / "qwen").path  # q/k/v biases
    assert main(["cp", str(qwen), str(tmp_path / "q"), "--format", "decilm"]) == 2
    assert "does not fit the DeciLM format" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_prune_falls_back_and_reports_why(tmp_path):
    out = tmp_path / "run"
    code = main(["prune", "--model", "tiny-llama", "--method", "random", "--out", str(out),
                 "output.format=decilm", "eval.speed=false", "eval.zero_shot=[]",
                 "eval.max_windows=1", "data.num_samples=1", "data.seq_len=16"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["saved"]["format"] != "decilm"
    assert any("not DeciLM" in n and "multiple of 256" in n for n in metrics["saved"]["notes"])
    assert "saved-format note: not DeciLM" in (out / "report.md").read_text()
    code = main(["prune", "--model", "tiny-qwen2", "--out", str(tmp_path / "q"),
                 "output.format=decilm"])
    assert code == 2 and not (tmp_path / "q").exists()
