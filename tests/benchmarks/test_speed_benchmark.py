"""benchmarks/speed/run.py --quick: the GPU benchmark's code paths run on a CPU at tiny shapes,
its time budget skips (and records) what does not fit, and its reports are written."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

SPEED = Path(__file__).resolve().parents[2] / "benchmarks" / "speed"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def speed_run(tmp_path_factory):
    sys.path.insert(0, str(SPEED))
    try:
        import run
    finally:
        sys.path.remove(str(SPEED))
    out = tmp_path_factory.mktemp("speed")
    assert run.main(["--quick", "--out", str(out), "--sections", "encoder,micro,smollm2",
                     "--budget-s", "25", "--device", "cpu"]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_results_record_device_versions_and_settings(speed_run):
    out, results = speed_run
    meta = results["meta"]
    assert meta["device"] == "cpu" and meta["quick"] and meta["fast_mode"] == "static"
    assert meta["torch"] and meta["transformers"] and meta["settings"]["encoder"]["seq_len"] == 32
    assert results["bandwidth"]["bytes_per_s"] > 0
    report = (out / "results.md").read_text()
    assert report.startswith("# Speed benchmark results") and "### Encoder" in report


def test_measurements_carry_their_ideal_and_the_budget_records_skips(speed_run):
    _, results = speed_run
    variants = results["encoder"]["variants"]
    assert variants and all(v["ideal"]["flops"] > 1 for v in variants)
    assert {v["round_to"] for v in variants} <= {"auto", 1}
    micro = results["diagnostics"]
    assert {r["width"] for r in micro["gemm_up"]} == {344, 275, 272}
    measured = [r for r in results["decoders"]["smollm2-135m"]["dense"]["speeds"]]
    skipped = results.get("skipped", [])
    assert measured or skipped  # 25 s on a busy CPU: some of both, typically
    assert all(item["reason"].startswith("time budget") for item in skipped)


@pytest.fixture(scope="module")
def speed_modules():
    sys.path.insert(0, str(SPEED))
    try:
        import cost
        import models
        import run
    finally:
        sys.path.remove(str(SPEED))
    return run, cost, models


@pytest.fixture(scope="module")
def cost_run(tmp_path_factory, speed_modules):
    run = speed_modules[0]
    out = tmp_path_factory.mktemp("cost")
    assert run.main(["--quick", "--out", str(out), "--sections", "cost", "--budget-s", "600",
                     "--device", "cpu"]) == 0
    return out, json.loads((out / "results.json").read_text())


LABELS = ["RI base perplexity", "RI attention x1", "RI FFN x1", "RI attention + FFN x4",
          "trial cold element1 (first)", "trial warm element1", "trial cold element1",
          "trial cold element2"]


def test_cost_section_times_one_trial_and_ri_per_sublayer_at_both_shapes(cost_run):
    out, results = cost_run
    cost = results["pruning_cost"]
    assert cost["settings"]["num_samples"] == 2 and cost["settings"]["heldout"] == 4
    for shape in ("llama-7b", "smollm2-135m"):
        rows = [r for r in cost["rows"] if r["shape"] == shape]
        assert [r["label"] for r in rows] == LABELS
        assert all(r["seconds"] > 0 and r["peak_memory"]["mb"] > 0 and r["timed"] for r in rows)
        trials = {r["label"]: r for r in rows if r["label"].startswith("trial")}
        first, warm = trials["trial cold element1 (first)"], trials["trial warm element1"]
        assert warm["candidate"]["samples"] == first["candidate"]["samples"] == [0, 1]
        assert trials["trial cold element1"]["candidate"]["samples"] == [2, 3]
        assert trials["trial cold element2"]["candidate"]["fine"] == "element2"
        assert all(math.isfinite(t["objective"]) and t["objective"] > 1 for t in trials.values())
        batched = rows[3]
        assert batched["seconds_per_sublayer"] == pytest.approx(batched["seconds"] / 4)
        assert len(batched["ri"]) == 4
        search = next(e for e in cost["ri_search"] if e["shape"] == shape)
        low, high = search["evaluations"]
        assert search["candidates"] < low <= high
        assert search["estimated_seconds"] == pytest.approx(
            [low * search["seconds_per_sublayer"], high * search["seconds_per_sublayer"]])
    report = (out / "results.md").read_text()
    assert "### Cost of pruning at LLaMA-7B shape" in report and "trial, fine=element2" in report


def test_recorded_ri_is_that_of_the_model_without_the_sublayer(cost_run, speed_modules):
    """The RI row's value equals (PPL without the sublayer - PPL) / PPL recomputed by masking
    it in a freshly built model of the same shape and windows."""
    from lmprune.arch import describe
    from lmprune.pruners.sublayer_search import masked_perplexity

    _, cost, models = speed_modules
    row = next(r for r in cost_run[1]["pruning_cost"]["rows"]
               if r["shape"] == "llama-7b" and r["label"] == "RI attention x1")
    (name, ri), = row["ri"].items()
    model = models.build("llama-7b", torch.device("cpu"), torch.float32, quick=True)
    structure = describe(model)
    run = cost.run_config(quick=True)
    windows = cost.measure.random_windows(model, run.adapruner.heldout, run.data.seq_len, 1)
    base = masked_perplexity(model, structure, windows, {})
    without = masked_perplexity(model, structure, windows, {name: "attention"})
    assert ri == pytest.approx((without - base) / base, rel=1e-4)


def test_progressive_evaluation_count_is_what_the_search_runs(speed_modules, monkeypatch):
    """progressive_evaluations(S, steps) == 1 + the candidate perplexities a real progressive
    ri_search computes in ``steps`` scoring steps (its removals, + 1 when it stops to finish
    with neurons); the estimate's upper bound covers it."""
    import lmprune.pruners.sublayer_search as search
    from lmprune.arch import describe

    _, cost, models = speed_modules
    model = models.build("smollm2-135m", torch.device("cpu"), torch.float32, quick=True)
    structure = describe(model)
    run = cost.run_config(quick=True)
    windows = cost.measure.random_windows(model, 2, 16, 1)
    scored, steps = [], []
    real_batch, real_step = search.candidate_perplexities, search._score_step

    def counting(model, structure, windows, base, names, rows_per_pass=64):
        scored.extend(names)
        return real_batch(model, structure, windows, base, names, rows_per_pass)

    def stepping(*args):
        steps.append(1)
        return real_step(*args)

    monkeypatch.setattr(search, "candidate_perplexities", counting)
    monkeypatch.setattr(search, "_score_step", stepping)
    result = search.ri_search(model, structure, windows, run.prune.sparsity,
                              finish=run.sublayer.finish, progress=False)
    candidates, removals = len(result.candidates), len(result.history)
    assert removals >= 2 and len(steps) in (removals, removals + 1)
    assert 1 + len(scored) == cost.progressive_evaluations(candidates, len(steps))
    estimate = cost.search_evaluations(model, structure, run, None)
    assert estimate["candidates"] == candidates
    assert 1 + len(scored) <= estimate["evaluations"][1]


def test_variant_and_batch_flags_reach_the_encoder_fast_rows(speed_modules, tmp_path):
    """--variants keeps only the named compiled encoder rows, --fast-batch-sizes sets the
    encoder's compiled batch sizes too (targeted GPU runs of one row)."""
    import argparse

    run = speed_modules[0]
    args = argparse.Namespace(out=str(tmp_path), quick=False, device="cpu", compile=False,
                              compile_mode="reduce-overhead", fast_only=True, budget_s=10.0,
                              variants=["uniform-60", "taylor-uniform-20"],
                              fast_batch_sizes=[128], decode_attention="sdpa")
    ctx = run.Context(args)
    assert ctx.settings["encoder"]["fast_variants"] == ["uniform-60"]
    assert ctx.settings["encoder"]["fast_batch_sizes"] == [128]
    assert ctx.settings["llama-7b"]["fast_batch_sizes"] == [128]
    args.variants, args.fast_batch_sizes = None, None
    default = run.Context(args).settings["encoder"]
    assert default["fast_variants"] == ["uniform-20", "uniform-40", "uniform-60", "global-40",
                                        "hidden-60"]
    assert default["fast_batch_sizes"] == [128, 512]


def test_the_hidden_plan_shrinks_every_body_matrix_on_both_sides(speed_modules):
    """models.with_hidden: heads, neurons and hidden channels at one sparsity s with
    (1 - s)^2 = 1 - target, so the body loses about the target; the pruned encoder runs."""
    models = speed_modules[2]
    from lmprune.arch import describe
    from lmprune.scorers.magnitude import magnitude_scores

    dense = models.build("roberta-base", torch.device("cpu"), torch.float32, quick=True)
    structure = describe(dense)
    scores = magnitude_scores(dense, structure, kinds=("heads", "neurons", "hidden"))
    pruned = models.apply(dense, models.with_hidden(structure, scores, 0.6, 1))
    w = models.widths(pruned)
    # quick shape: hidden 128, 4 heads, FFN 512; s = 1 - sqrt(0.4) = 0.368
    assert (w["hidden"], w["heads"], w["ffn"]) == (81, 3, 324)
    assert abs(models.body_share_removed(dense, pruned) - 0.6) < 0.05
    assert models.widths(dense)["hidden"] == 128  # the dense model is left as it was
    ids = torch.randint(5, 900, (2, 16))
    assert pruned(input_ids=ids).logits.shape == dense(input_ids=ids).logits.shape == (2, 2)


def test_the_hidden_plan_at_roberta_base_shape_matches_uniform_60s_ideal(speed_modules):
    """The widths BENCHMARKS.md quotes for hidden-60: same FLOP ideal as uniform-60."""
    models = speed_modules[2]
    from lmprune.arch import describe
    from lmprune.evaluation.ideal import ideal_speedups
    from lmprune.scorers.magnitude import magnitude_scores

    dense = models.build("roberta-base", torch.device("cpu"), torch.float32, quick=False)
    structure = describe(dense)
    scores = magnitude_scores(dense, structure, kinds=("heads", "neurons", "hidden"))
    hidden = models.apply(dense, models.with_hidden(structure, scores, 0.6, "auto"))
    uniform = models.apply(dense, models.uniform(structure, scores, 0.6, "auto"))
    w = models.widths(hidden)
    assert (w["hidden"], w["heads"], w["ffn"]) == (480, 8, 1920)
    assert round(models.body_share_removed(dense, hidden), 3) == 0.6
    ideal = ideal_speedups(dense, hidden, 128)["flops"]
    assert round(ideal, 2) == round(ideal_speedups(dense, uniform, 128)["flops"], 2) == 2.46


def test_the_decode_attention_flag_reaches_every_decoder_row(speed_modules, tmp_path):
    run = speed_modules[0]
    assert run.main(["--quick", "--out", str(tmp_path), "--sections", "smollm2", "--budget-s",
                     "20", "--device", "cpu", "--fast-only", "--decode-attention", "filled"]) == 0
    found = json.loads((tmp_path / "results.json").read_text())
    assert found["meta"]["decode_attention"] == "filled"
    rows = [row for v in found["decoders"]["smollm2-135m"]["variants"]
            for row in v.get("speeds", []) if "decode_tokens_per_s" in row]
    assert rows and all(row["attention"] == "filled" for row in rows)
    assert "decode attention filled" in (tmp_path / "results.md").read_text()
