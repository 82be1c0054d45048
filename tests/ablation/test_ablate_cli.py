"""``lmprune ablate`` end to end on tiny models: dry run, results, plots, resume."""
from __future__ import annotations

import csv
import json

import pytest

from lmprune.ablation import runner as runner_mod
from lmprune.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")

APT_PLAN = """<div><style>p { margin: 0 }</style>
<h2>Plan</h2>
<p>Reasoning first: distillation and the salience score are claimed to matter.</p>

### Ablation 1
- **Ablated Part**: Self-knowledge distillation
- **Action**: REMOVE
- **Metrics**: task performance, training efficiency, convergence speed

### Ablation 2
- **Ablated Part**: Outlier-aware salience scoring (mechanism)
- **Action**: REPLACE
- **Replacement**:
  - random scoring
- **Metrics**: task performance, inference speed, memory usage
</div>
"""
TINY_BERT = ["model.name=tiny-bert", "train.max_steps=6", "train.max_train_samples=48",
             "train.max_eval_samples=16", "train.eval_every=2", "train.measure_batch_sizes=[2]",
             "train.measure_seq_len=16", "train.measure_seconds=0.1", "train.batch_size=8",
             "apt.prune_start=1", "apt.prune_stop_epochs=0.5", "apt.events=2"]
SUBLAYER_PLAN = """# RI ablations
Some reasoning about why.

### 1. Normalization
* **Ablated Part:** Normalization step in RI metric
* **Action:** REMOVE
* **Metrics:** perplexity, task performance, speedup, memory footprint, training time

### 2. Progressive search
* **Ablated Part:** Progressive search strategy
* **Action:** REPLACE
* **Replacement:**
    * One-shot pruning
* **Metrics:** perplexity
"""
TINY_LLAMA = ["model.name=tiny-llama", "prune.layer_range=null", "prune.sparsity=0.3",
              "data.num_samples=2", "data.seq_len=32", "adapruner.heldout=2",
              "sublayer.max_windows=1", "eval.max_windows=2", "eval.limit=4",
              "eval.batch_sizes=[1,2]", "eval.new_tokens=4", "eval.prompt_len=8"]


@pytest.fixture(scope="module")
def apt_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("apt")
    plan = root / "plan.md"
    plan.write_text(APT_PLAN)
    out = root / "out"
    assert main(["ablate", str(plan), "--out", str(out), "--seeds", "2", "--base",
                 "ablate-apt-cpu", *TINY_BERT]) == 0
    return out


def test_dry_run_prints_the_understanding_and_runs_nothing(tmp_path, capsys):
    plan = tmp_path / "plan.md"
    plan.write_text(APT_PLAN)
    assert main(["ablate", str(plan), "--dry-run", "--base", "ablate-apt-cpu",
                 "--seeds", "2", *TINY_BERT]) == 0
    out = capsys.readouterr().out
    for line in [
        "method: apt (inferred: 2 of 2 section(s) name components of apt); runs: lmprune "
        "train with train.method=apt",
        "base config: ablate-apt-cpu (--base)",
        "  - Ablation 1: 'Self-knowledge distillation' -> self-distillation (matched 'self "
        "knowledge distillation'); REMOVE",
        "       apt.distill=false  [variant distill-remove]",
        "       'random scoring' -> random: apt.salience=random  [variant salience-random]",
        "  convergence speed -> seconds and steps of the first curve point at the final "
        "sparsity reaching 97% of the reference's best dev score",
        "runs: 3 configurations (reference + 2 variant(s)) x 2 seed(s) = 6 runs",
        "dry run: nothing was run"]:
        assert line in out.splitlines(), line
    assert not (tmp_path / "runs").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "plan.md"]


def test_results_table_csv_and_plots(apt_run):
    names = {p.name for p in apt_run.iterdir()}
    assert {"results.md", "results.csv", "ablation.json", "plan.md"} <= names
    assert {"plot-task-performance.png", "plot-training-efficiency.png",
            "plot-convergence-speed.png", "plot-inference-speed.png",
            "plot-memory-usage.png"} <= names
    rows = list(csv.DictReader((apt_run / "results.csv").open()))
    assert [r["variant"] for r in rows] == ["reference", "distill-remove", "salience-random"]
    assert rows[1]["overrides"] == "apt.distill=false" and rows[0]["seeds"] == "0 1"
    for key in ("kept", "dev", "train_s", "steps_per_s", "conv_s", "conv_steps",
                "speedup_bs2", "latency_bs2", "train_mem_mb"):
        assert f"{key}_mean" in rows[0] and f"{key}_beyond_noise" in rows[0], key
    assert rows[0]["dev_n"] == "2" and rows[0]["dev_delta"] == ""
    assert rows[1]["dev_beyond_noise"] in ("true", "false")
    for row in rows:
        reports = row["reports"].split()
        assert len(reports) == 2 and all((apt_run / r).is_file() for r in reports)
        runs = [json.loads((apt_run / r).with_name("metrics.json").read_text()) for r in reports]
        assert float(row["dev_mean"]) == pytest.approx(sum(m["metric"] for m in runs) / 2,
                                                       abs=1e-6)
    table = (apt_run / "results.md").read_text()
    assert "| **reference** |" in table and "| distill-remove |" in table
    assert "[s1](runs/salience-random/seed1/report.md)" in table
    assert "beyond noise" in table or "within noise" in table
    # on a CPU the memory column is process RSS shared by every run: said under the table
    assert "(MB, CPU RSS)" in table and "not comparable between rows" in table
    assert not (apt_run / "runs" / "reference" / "seed0" / "model").exists()


def test_rerun_reuses_everything(apt_run, capsys, monkeypatch):
    monkeypatch.setattr(runner_mod, "run_one", lambda *a: pytest.fail("a run was redone"))
    assert main(["ablate", str(apt_run / "plan.md"), "--out", str(apt_run), "--seeds", "2",
                 "--base", "ablate-apt-cpu", *TINY_BERT]) == 0
    out = capsys.readouterr().out
    assert out.count("finished before, reused") == 6
    assert "[ablate] variant 3/3 (salience-random, seed 1): finished before, reused" in out


def test_a_changed_config_is_not_silently_reused(apt_run, capsys):
    code = main(["ablate", str(apt_run / "plan.md"), "--out", str(apt_run), "--seeds", "2",
                 "--base", "ablate-apt-cpu", *TINY_BERT, "apt.ema=0.5"])
    err = capsys.readouterr().err
    assert code == 2 and "made with a different config" in err
    assert "apt.ema: 0.85 there, 0.5 now" in err


def test_interrupted_ablation_resumes_without_redoing_finished_runs(tmp_path, capsys,
                                                                   monkeypatch):
    plan = tmp_path / "plan.md"
    plan.write_text("### d\n- **Ablated Part**: self-distillation\n- **Action**: REMOVE\n")
    args = ["ablate", str(plan), "--out", str(tmp_path / "out"), "--seeds", "1", "--base",
            "ablate-apt-cpu", *TINY_BERT, "train.measure=false"]
    real, calls = runner_mod.run_one, []

    def interrupted(runner, config):
        calls.append(config.output.dir)
        if len(calls) == 2:
            stage = tmp_path / "out" / "runs" / "distill-remove" / ".seed0.partial"
            stage.mkdir(parents=True)  # what a killed recipe leaves behind
            raise KeyboardInterrupt
        return real(runner, config)

    monkeypatch.setattr(runner_mod, "run_one", interrupted)
    assert main(args) == 130
    assert not (tmp_path / "out" / "results.md").exists()
    finished = tmp_path / "out" / "runs" / "reference" / "seed0" / "metrics.json"
    before = finished.stat().st_mtime_ns
    calls.clear()
    monkeypatch.setattr(runner_mod, "run_one", lambda runner, config: (
        calls.append(config.output.dir), real(runner, config))[1])
    assert main(args) == 0
    assert calls == [str(tmp_path / "out" / "runs" / "distill-remove" / "seed0")]
    assert finished.stat().st_mtime_ns == before
    assert not (tmp_path / "out" / "runs" / "distill-remove" / ".seed0.partial").exists()
    out = capsys.readouterr().out
    assert "[ablate] variant 1/2 (reference, seed 0): finished before, reused" in out
    assert "[ablate] variant 2/2 (distill-remove, seed 0): self-distillation: REMOVE" in out
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert [r["variant"] for r in rows] == ["reference", "distill-remove"]
    assert rows[1]["dev_noise"] == "" and rows[1]["dev_beyond_noise"] == ""  # one seed


def test_sublayer_plan_on_tiny_llama(tmp_path, capsys):
    plan = tmp_path / "ri.md"
    plan.write_text(SUBLAYER_PLAN)
    out = tmp_path / "out"
    assert main(["ablate", str(plan), "--out", str(out), "--seeds", "1", "--base",
                 "ablate-llm-cpu", *TINY_LLAMA]) == 0
    printed = capsys.readouterr().out
    assert "method: sublayer-ri (inferred: 2 of 2 section(s)" in printed
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["variant"] for r in rows] == ["reference", "ri-normalization-remove",
                                            "progressive-one-shot"]
    assert rows[1]["overrides"] == "sublayer.normalize=false"
    for key in ("removed", "ppl_austen", "zs_wordnet-defs", "speedup_bs1", "latency_bs2",
                "gen_mem_mb", "prune_mem_mb", "prune_s"):
        assert rows[0][f"{key}_mean"] != "", key
    # generation memory on a CPU is the model-alone estimate from tensor sizes, not RSS
    assert "(MB, CPU, tensor sizes)" in (out / "results.md").read_text()
    config = json.loads((out / "ablation.json").read_text())
    assert config["method"] == "sublayer-ri" and config["recipe"] == "prune"
    metrics = json.loads((out / "runs/progressive-one-shot/seed0/metrics.json").read_text())
    assert float(rows[2]["ppl_austen_mean"]) == pytest.approx(
        metrics["after"]["perplexity"]["austen"]["perplexity"], rel=1e-5)
    assert {p.name for p in out.glob("plot-*.png")} == {
        "plot-perplexity.png", "plot-task-performance.png", "plot-inference-speed.png",
        "plot-memory-usage.png", "plot-training-time.png"}


def test_cli_errors(tmp_path, capsys):
    plan = tmp_path / "p.md"
    plan.write_text("### x\n- **Ablated Part**: TPE\n- **Action**: REPLACE\n")
    assert main(["ablate", str(plan), "--dry-run"]) == 2
    assert "says REPLACE but lists no replacement" in capsys.readouterr().err
    plan.write_text("### x\n- **Ablated Part**: TPE\n- **Action**: REMOVE\n")
    assert main(["ablate", str(plan)]) == 2
    assert "--out DIR is required" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("")
    assert main(["ablate", str(plan), "--out", str(tmp_path / "full"), "--base",
                 "ablate-llm-cpu", "model.name=tiny-llama", "prune.layer_range=null"]) == 2
    assert "not an ablation directory" in capsys.readouterr().err
    assert main(["ablate", str(tmp_path / "missing.md"), "--dry-run"]) == 2
    assert "ablation plan not found" in capsys.readouterr().err


def test_ls_components(capsys):
    assert main(["ls", "components"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["METHOD", "COMPONENT", "ACTION", "OVERRIDES", "MEANING"]
    assert any(line.startswith("apt ") and "REPLACE -> random" in line
               and "apt.salience=random" in line for line in lines)
    assert any("sublayer-ri" in line and "sublayer.normalize=false" in line for line in lines)
    assert main(["ls", "components", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["components"]
    tpe = [r for r in rows if r["component"] == "TPE search"]
    assert [(r["action"], r["overrides"]) for r in tpe] == [
        ("REMOVE", ["adapruner.search_samples=false", "adapruner.search_mix=false"]),
        ("REPLACE -> random search", ["adapruner.sampler=random"])]
    assert "random search" in tpe[1]["replacement_aliases"]


def test_a_failing_variant_is_recorded_and_the_others_run(tmp_path, capsys, monkeypatch):
    plan = tmp_path / "plan.md"
    plan.write_text("### d\n- **Ablated Part**: self-distillation\n- **Action**: REMOVE\n"
                    "### e\n- **Ablated Part**: EMA of salience\n- **Action**: REMOVE\n")
    out = tmp_path / "out"
    args = ["ablate", str(plan), "--out", str(out), "--seeds", "1", "--base",
            "ablate-apt-cpu", *TINY_BERT, "train.measure=false"]
    real = runner_mod.run_one

    def broken(runner, config):
        if not config.apt.distill:
            raise RuntimeError("the distill switch is broken")
        return real(runner, config)

    monkeypatch.setattr(runner_mod, "run_one", broken)
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "FAILED (distill-remove, seed 0): RuntimeError: the distill switch is broken" in \
        captured.out
    assert "1 run(s) failed: distill-remove seed 0" in captured.err
    error = out / "runs" / "distill-remove" / "seed0.error.txt"
    assert "Traceback" in error.read_text()
    assert (out / "runs" / "ema-remove" / "seed0" / "metrics.json").is_file()
    table = (out / "results.md").read_text()
    assert "**Partial: 2 of 3 runs finished**" in table and "## Failed runs" in table
    monkeypatch.setattr(runner_mod, "run_one", real)
    assert main(args) == 0  # retried; the others reused
    assert not error.exists() and "Partial" not in (out / "results.md").read_text()
