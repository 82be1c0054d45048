"""`lmprune prune` and `lmprune eval` end to end on tiny-llama (offline)."""
from __future__ import annotations

import json

import pytest

from lmprune import load_pretrained
from lmprune.cli.main import main

FAST_EVAL = ["eval.max_windows=2", "eval.zero_shot=[wordnet-defs]", "eval.limit=4",
             "eval.batch_sizes=[1,2]", "eval.new_tokens=4", "eval.prompt_len=8",
             "data.num_samples=2", "data.seq_len=32"]


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "random"
    code = main(["prune", "--method", "random", "--model", "tiny-llama", "--sparsity", "0.25",
                 "--out", str(out), *FAST_EVAL])
    assert code == 0
    return out


def test_prune_writes_model_plan_metrics_report(pruned_run):
    for name in ("metrics.json", "report.md", "config.yaml", "layer_widths.png",
                 "model/config.json", "model/lmprune_plan.json"):
        assert (pruned_run / name).exists(), name
    metrics = json.loads((pruned_run / "metrics.json").read_text())
    assert metrics["method"] == "random" and metrics["sparsity"] == 0.25
    assert abs(metrics["params_removed_fraction"]["body"] - 0.25) <= 0.002  # budget params
    assert metrics["settings"]["prune"]["budget"] == "params"
    for side in ("before", "after"):
        assert metrics[side]["perplexity"]["austen"]["perplexity"] > 1
        assert 0 <= metrics[side]["zero_shot"]["wordnet-defs"]["acc"] <= 1
        assert [r["batch_size"] for r in metrics[side]["speed"]] == [1, 2]
    assert set(metrics["speedup"]) == {"1", "2"}  # JSON object keys are strings
    assert "windows of 128 tokens" in metrics["protocols"]["austen"]
    report = (pruned_run / "report.md").read_text()
    assert "| ppl.austen |" in report and "Measured speedup" in report
    removed = metrics["params_removed_fraction"]["body"]
    assert f"- removed: {removed:.2%} of the non-embedding parameters" in report
    assert "- settings: random: 25% of non-embedding parameters, heads/neurons" in report
    model = load_pretrained(pruned_run / "model")
    assert sum(p.numel() for p in model.parameters()) == metrics["after"]["params"]["total"]


def test_eval_runs_offline_zero_shot(pruned_run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = main(["eval", "--model", str(pruned_run / "model"), "--tasks", "wordnet-defs",
                 "--limit", "4", "--no-speed", "--out", str(out), "eval.max_windows=2"])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["zero_shot"]["wordnet-defs"]["n"] == 4
    assert "speed" not in result and result["perplexity"]["austen"]["windows"] == 2
    assert "wordnet-defs.acc" in capsys.readouterr().out


def test_existing_output_is_refused(pruned_run, capsys):
    assert main(["prune", "--model", "tiny-llama", "--out", str(pruned_run), *FAST_EVAL]) == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--method", "tayler"], "unknown method 'tayler'"),
    (["--sparsity", "1.0"], "sparsity: must be in [0, 1)"),
    (["data.seq_len=100000000"], "use at most 128 (tiny-llama has 128 positions)"),
    (["--calibration", "foods"], "calibration needs a text dataset"),
    (["--model", "tiny-lama"], "Did you mean 'tiny-llama'"),
])
def test_bad_input_is_reported(tmp_path, capsys, args, message):
    code = main(["prune", "--model", "tiny-llama", "--out", str(tmp_path / "x"), *FAST_EVAL, *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_memory_is_per_model_and_labelled(pruned_run):
    metrics = json.loads((pruned_run / "metrics.json").read_text())
    for dense, pruned in zip(metrics["before"]["speed"], metrics["after"]["speed"], strict=True):
        assert pruned["memory_kind"] == dense["memory_kind"] == "cpu_tensor_bytes"
        assert "this model alone" in pruned["memory_label"]
        assert 0 < pruned["peak_memory_mb"] < dense["peak_memory_mb"]  # 25% of units removed
    assert "each model measured alone" in metrics["protocols"]["memory"]
    report = (pruned_run / "report.md").read_text()
    assert "| model memory MB@bs1 |" in report and "weights + KV cache" in report
