"""``lmprune ablate --jobs N``: worker processes split the pairs and give the sequential result."""
from __future__ import annotations

import csv
import json
import sys

import pytest

from lmprune.ablation import build_ablation, read_plan
from lmprune.ablation import runner as runner_mod
from lmprune.ablation.parallel import ablate_args, parse_shard, worker_command
from lmprune.ablation.runner import Runner, failure_file, prepare, run_dir
from lmprune.cli.main import main
from lmprune.errors import LmpruneError

pytestmark = pytest.mark.usefixtures("one_thread")

PLAN = """### Distillation
- **Ablated Part**: Self-knowledge distillation
- **Action**: REMOVE
- **Metrics**: task performance

### Salience
- **Ablated Part**: outlier-aware salience
- **Action**: REPLACE
- **Replacement**:
  - magnitude-based scoring
- **Metrics**: task performance
"""
TINY = ["model.name=tiny-bert", "train.max_steps=4", "train.max_train_samples=32",
        "train.max_eval_samples=16", "train.eval_every=2", "train.batch_size=8",
        "train.measure=false", "apt.prune_start=1", "apt.prune_stop_epochs=0.5",
        "apt.events=2"]


def _ablation(tmp_path, seeds=2):
    plan = tmp_path / "plan.md"
    plan.write_text(PLAN)
    return build_ablation(read_plan(str(plan)), base="ablate-apt-cpu", overrides=TINY,
                          seeds=seeds)


def test_shards_split_the_pairs_exactly_once(tmp_path, monkeypatch):
    ablation = _ablation(tmp_path)
    ran: list[str] = []
    monkeypatch.setattr(runner_mod, "run_one",
                        lambda runner, config: ran.append(config.output.dir) or {})
    Runner(ablation, tmp_path / "all", log=lambda m: None).run()
    every = [d.replace("/all/", "/") for d in ran]
    shards = []
    for i in range(3):
        ran.clear()
        Runner(ablation, tmp_path / "all", log=lambda m: None, shard=(i, 3)).run()
        shards.append([d.replace("/all/", "/") for d in ran])
    assert len(every) == 6  # reference + 2 variants, 2 seeds
    assert sorted(sum(shards, [])) == sorted(every)  # each pair in exactly one shard
    assert all(len(s) == 2 for s in shards)  # balanced: place modulo 3


def test_the_pass_after_the_workers_reports_what_they_left(tmp_path, monkeypatch):
    ablation = _ablation(tmp_path, seeds=1)
    out = tmp_path / "out"
    monkeypatch.setattr(runner_mod, "run_one",
                        lambda runner, config: pytest.fail("execute=False ran a pair"))
    prepare(out, ablation)  # as the parent does before starting the workers
    variants = ablation.all_variants()
    finished = run_dir(out, variants[0], 0)
    finished.mkdir(parents=True)
    (finished / "metrics.json").write_text("{}")
    broken = run_dir(out, variants[1], 0)
    broken.parent.mkdir(parents=True)
    failure_file(broken).write_text("ValueError: boom\n\nTraceback ...")
    lines: list[str] = []
    runner = Runner(ablation, out, log=lines.append, execute=False)
    done = runner.run()
    assert [v.slug for v, _, _ in done] == [variants[0].slug]
    assert [(v.slug, m) for v, _, m in runner.failures] == [
        (variants[1].slug, "ValueError: boom"),
        (variants[2].slug, "did not run (its worker stopped first)")]
    assert any("NOT FINISHED" in line for line in lines)


def test_worker_command_and_shard_parsing():
    args = ablate_args("p.md", "out", 3, base="ablate-apt", method="apt", keep_models=True,
                       overrides=["train.lr=1e-4"])
    assert worker_command(args, 1, 4) == [
        sys.executable, "-m", "lmprune", "ablate", "p.md", "--out", "out", "--seeds", "3",
        "--base", "ablate-apt", "--method", "apt", "--keep-models", "train.lr=1e-4",
        "--shard", "1/4"]
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "x/2", "1", "-1/2"):
        with pytest.raises(LmpruneError):
            parse_shard(bad)


def test_jobs_give_the_sequential_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    plan = tmp_path / "plan.md"
    plan.write_text(PLAN)
    common = ["--seeds", "1", "--base", "ablate-apt-cpu", *TINY]
    assert main(["ablate", str(plan), "--out", str(tmp_path / "seq"), *common]) == 0
    capsys.readouterr()
    assert main(["ablate", str(plan), "--out", str(tmp_path / "par"), "--jobs", "2",
                 *common]) == 0
    printed = capsys.readouterr().out
    assert "[job 0] [ablate] variant 1/3 (reference, seed 0)" in printed
    assert "[job 1] [ablate] variant 2/3" in printed
    assert "[job 0] [ablate] variant 3/3" in printed
    rows = {name: list(csv.DictReader((tmp_path / name / "results.csv").open()))
            for name in ("seq", "par")}
    assert [r["variant"] for r in rows["par"]] == [r["variant"] for r in rows["seq"]]
    for slug in ("reference", "distill-remove"):
        seq, par = (json.loads((tmp_path / name / "runs" / slug / "seed0" / "metrics.json")
                               .read_text()) for name in ("seq", "par"))
        assert par["metric"] == pytest.approx(seq["metric"], abs=1e-6)
        assert par["kept_params_ratio"] == seq["kept_params_ratio"]
    assert not (tmp_path / "par" / "results.md").read_text().startswith("**Partial")
    # a rerun reuses every run, also those whose lengths the recipe cut to tiny-bert's 64
    # positions (measure_seq_len 128 asked, 64 saved in the run's config.yaml)
    assert main(["ablate", str(plan), "--out", str(tmp_path / "seq"), *common]) == 0
    assert capsys.readouterr().out.count("finished before, reused") == 3


def test_jobs_errors(tmp_path, capsys):
    plan = tmp_path / "plan.md"
    plan.write_text(PLAN)
    assert main(["ablate", str(plan), "--out", str(tmp_path / "o"), "--jobs", "0"]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err
    assert main(["ablate", str(plan), "--out", str(tmp_path / "o"), "--jobs", "2",
                 "--shard", "0/2"]) == 2
    assert "not both" in capsys.readouterr().err
