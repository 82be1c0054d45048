"""Gradient handling of the Taylor scorer: hooks free every gradient, only the needed weights
get one, micro-batches and metric subsets agree, bf16 and encoder-decoders work."""
from __future__ import annotations

import pytest
import torch

import lmprune.scorers.taylor as taylor
import lmprune.scorers.taylor_passes as passes
from lmprune.arch import describe
from lmprune.errors import LmpruneError
from lmprune.scorers.coupling import coupled_tensors
from lmprune.scorers.taylor import METRICS, taylor_metrics, taylor_scores
from lmprune.scorers.taylor_memory import activation_savings
from lmprune.scorers.taylor_passes import plan_passes
from lmprune.zoo import build_tiny

from scorer_toys import one_layer_llama, token_samples


def _close(a, b, rel=1e-5):
    return torch.allclose(a, b, rtol=rel, atol=1e-12)


def test_no_gradient_left_and_flags_restored():
    model = one_layer_llama(layers=2)
    model.model.embed_tokens.weight.requires_grad_(False)  # a caller's own choice
    stale = torch.ones_like(model.lm_head.weight)
    model.lm_head.weight.grad = stale  # a caller's own gradient
    model.train()
    taylor_metrics(model, describe(model), token_samples(3, 10), METRICS, progress=False)
    for name, p in model.named_parameters():
        assert (p.grad is None) != (name == "lm_head.weight"), name
        assert p.requires_grad == (name != "model.embed_tokens.weight"), name
    assert model.lm_head.weight.grad is stale
    assert model.training


def test_each_weight_is_scored_while_no_other_gradient_is_alive(monkeypatch):
    """One backward: every weight is scored inside its own hook, when every other watched
    weight's gradient has already been freed (or not yet computed); no gradient buffer."""
    model = one_layer_llama(layers=2)
    seen, alive = [], []
    original = taylor._score_tensor

    def spy(tensor, index, grad, hessian, results):
        seen.append(tensor.name)
        alive.append(sum(p.grad is not None for p in model.parameters()))
        original(tensor, index, grad, hessian, results)

    monkeypatch.setattr(taylor, "_score_tensor", spy)
    monkeypatch.setattr(passes, "FloatSums", None)  # element1 must not need any buffer
    taylor_scores(model, describe(model), token_samples(3, 10), "element1", progress=False)
    assert sorted(seen) == sorted(n for n, _ in model.named_parameters())
    assert max(alive) == 0


def test_only_the_requested_sites_get_gradients(monkeypatch):
    model = one_layer_llama(layers=2)
    seen = []
    original = taylor._score_tensor
    monkeypatch.setattr(taylor, "_score_tensor",
                        lambda t, *args: (seen.append(t.name), original(t, *args)))
    scores = taylor_scores(model, describe(model), token_samples(2, 10), "element2",
                           kinds=("neurons",), layer_range=[1, 2], progress=False)
    ffn = [f"model.layers.1.mlp.{x}_proj.weight" for x in ("gate", "up", "down")]
    assert sorted(seen) == sorted(ffn)
    assert list(scores.neurons) == ["layers.1.ffn"]
    assert not scores.heads and scores.hidden is None and not scores.layers


def test_micro_batches_give_the_full_batch_scores(recwarn):
    model = one_layer_llama()
    structure, samples = describe(model), token_samples(8, 64)
    whole = taylor_metrics(model, structure, samples, METRICS, progress=False)
    parts = taylor_metrics(model, structure, samples, METRICS, batch_size=2, progress=False)
    assert not [w for w in recwarn if "one pass" in str(w.message)]  # really micro-batched
    alone = taylor_metrics(model, structure, samples, ("element1",), progress=False)
    for metric in METRICS:
        assert _close(whole[metric].neurons["layers.0.ffn"], parts[metric].neurons["layers.0.ffn"])
        assert _close(whole[metric].hidden, parts[metric].hidden)
        assert whole[metric].layers["layers.0"] == pytest.approx(parts[metric].layers["layers.0"],
                                                                 rel=1e-5)
    site = "layers.0.attn"
    assert _close(whole["element1"].heads[site], alone["element1"].heads[site])


def test_bfloat16_model_scores_like_float32():
    model = one_layer_llama()
    structure, samples = describe(model), token_samples(4, 16)
    full = taylor_scores(model, structure, samples, "element2", progress=False)
    model.to(torch.bfloat16)
    half = taylor_scores(model, structure, samples, "element2", progress=False)
    assert all(p.dtype == torch.bfloat16 and p.grad is None for p in model.parameters())
    a, b = full.neurons["layers.0.ffn"], half.neurons["layers.0.ffn"]
    assert torch.isfinite(b).all() and b.dtype == torch.float64
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.95
    assert torch.isfinite(half.hidden).all()


def test_encoder_decoder_is_scored_with_its_reconstruction_loss():
    model = build_tiny("tiny-t5-gated")
    structure = describe(model)
    scores = taylor_scores(model, structure, token_samples(2, 10), "element1",
                           kinds=("heads", "neurons"), progress=False)
    assert set(scores.heads) == {s.name for s in structure.attention}
    assert all((v > 0).all() for v in scores.neurons.values())


def test_model_without_language_model_loss_is_refused():
    model = build_tiny("tiny-bert")  # a sequence classifier
    with pytest.raises(LmpruneError, match="language-model head"):
        taylor_scores(model, describe(model), token_samples(2, 10, vocab=100), progress=False)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("kwargs, message", [
    ({"metrics": ("element3",)}, "unknown Taylor metric"),
    ({"aggregation": "median"}, "unknown aggregation"),
    ({"kinds": ("rows",)}, "unknown group kind"),
    ({"samples": torch.ones(2, 5)}, "token ids"),
    ({"samples": torch.ones(5, dtype=torch.long)}, r"\[N, L\]"),
    ({"layer_range": [5, 9], "kinds": ("neurons",)}, "nothing to score"),
    ({"batch_size": 0}, "batch_size"),
])
def test_bad_arguments(kwargs, message):
    model = one_layer_llama()
    args = {"samples": token_samples(2, 8)} | kwargs
    samples = args.pop("samples")
    with pytest.raises(LmpruneError, match=message):
        taylor_metrics(model, describe(model), samples, progress=False, **args)


def test_param_second_and_vector_need_no_per_element_buffer(monkeypatch):
    """Both are linear in what the passes produce (H, resp. G): per-index sums add up."""
    model = one_layer_llama()
    structure, samples = describe(model), token_samples(8, 64)
    expected = taylor_metrics(model, structure, samples, ("param_second", "vector"),
                              progress=False)
    monkeypatch.setattr(passes, "FloatSums", None)
    got = taylor_metrics(model, structure, samples, ("param_second", "vector"), batch_size=3,
                         progress=False)
    for metric in ("param_second", "vector"):
        assert _close(got[metric].neurons["layers.0.ffn"], expected[metric].neurons["layers.0.ffn"])
        assert _close(got[metric].heads["layers.0.attn"], expected[metric].heads["layers.0.attn"])


def test_streamed_layer_chunks_give_the_same_scores_and_bound_the_buffer(monkeypatch):
    """element2 with a small buffer budget: one chunk per layer, the same scores, and while
    a chunk runs only its own weights get gradients."""
    model = one_layer_llama(layers=3)
    structure, samples = describe(model), token_samples(3, 16)
    kinds = ("heads", "neurons")
    whole = taylor_metrics(model, structure, samples, ("element2",), kinds=kinds, progress=False)
    tensors = coupled_tensors(model, structure, kinds)
    plan = plan_passes(tensors, ("element2",), 3, None, buffer_fraction=0.3)
    assert len(plan.chunks) == 3  # one layer's H (fp64 = weights' bytes) > 0.3 x all weights
    weights = sum(t.param.numel() * t.param.element_size() for t in tensors)
    assert plan.buffer_bytes == max(sum(tensors[i].param.numel() * 8 for i in c)
                                    for c in plan.chunks) <= weights / 2
    layers_seen = []
    original = passes.watch_gradients

    def spy(model_, params, hook):
        names = {n for n, p in model_.named_parameters() if any(p is q for q in params)}
        layers_seen.append({n.split(".")[2] for n in names})
        return original(model_, params, hook)

    monkeypatch.setattr(passes, "watch_gradients", spy)
    streamed = taylor_metrics(model, structure, samples, ("element2",), kinds=kinds,
                              buffer_fraction=0.3, progress=False)["element2"]
    assert all(len(layers) == 1 for layers in layers_seen) and len(layers_seen) == 6
    for site in whole["element2"].neurons:
        assert _close(streamed.neurons[site], whole["element2"].neurons[site])
        assert _close(streamed.heads[site.replace("ffn", "attn")],
                      whole["element2"].heads[site.replace("ffn", "attn")])


def test_micro_batch_buffers_never_exceed_the_activations_they_save():
    """The plan's ΣG (+H) buffer fits in the lower bound of the activation memory that
    micro-batching saves; where one layer's buffer would not, the plan uses one batch."""
    model = one_layer_llama(layers=4)
    structure = describe(model)
    tensors = coupled_tensors(model, structure, ("heads", "neurons"))
    for n, length, batch in ((8, 64, 2), (16, 128, 4), (4, 32, 1)):
        saving = activation_savings(model, structure, tensors, n, length)
        for metrics in (("element1",), ("element2",)):
            plan = plan_passes(tensors, metrics, n, batch, 10.0, saving)
            assert plan.batch == batch and plan.buffered_g
            assert plan.buffer_bytes <= saving(batch)
    saving = activation_savings(model, structure, tensors, 3, 8)  # too few tokens to matter
    with pytest.warns(UserWarning, match="one pass"):
        plan = plan_passes(tensors, ("element1",), 3, 1, 10.0, saving)
    assert plan.batch == 3 and not plan.buffered_g and plan.buffer_bytes == 0


def test_activation_lower_bound_counts_shared_inputs_once():
    """Per token: q/k/v share one input (hidden), o reads the heads, gate/up share one input,
    down reads the FFN width; plus 4 bytes of log-probabilities per vocabulary entry."""
    from lmprune.scorers.taylor_memory import activation_bytes_lower_bound, saved_inputs_per_token

    model = one_layer_llama(layers=2)  # hidden 64, 8 heads x 8, FFN 96, fp64
    structure = describe(model)
    tensors = coupled_tensors(model, structure, ("heads", "neurons"))
    assert saved_inputs_per_token(model, structure, tensors) == 2 * (64 + 64 + 64 + 96)
    vocab = model.config.vocab_size
    assert activation_bytes_lower_bound(model, structure, tensors, 10) == \
        10 * (2 * (64 + 64 + 64 + 96) * 8 + 4 * vocab)
    only_ffn = coupled_tensors(model, structure, ("neurons",), [1, 2])
    assert saved_inputs_per_token(model, structure, only_ffn) == 64 + 96


def test_llm_pruner_names_are_accepted():
    model = one_layer_llama()
    samples = token_samples(2, 8)
    a = taylor_scores(model, describe(model), samples, "param_first", kinds=("neurons",),
                      progress=False)
    b = taylor_scores(model, describe(model), samples, "element1", kinds=("neurons",),
                      progress=False)
    assert torch.equal(a.neurons["layers.0.ffn"], b.neurons["layers.0.ffn"])
