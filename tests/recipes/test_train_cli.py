"""``lmprune train`` end to end on tiny models: every method x encoder / encoder-decoder /
decoder, the saved model, the metrics, QA and summarization, and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmprune.cli.main import main
from lmprune.structures.export import load_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")

METHODS = ("ft", "lora", "apt", "lora-prune", "mask-tuning", "cofi", "lora-prune-distill")
PRUNING = ("apt", "lora-prune", "mask-tuning", "lora-prune-distill")
FAST = ["train.max_steps=6", "train.max_train_samples=48", "train.max_eval_samples=16",
        "train.eval_every=3", "train.measure=false", "train.progress=false",
        "apt.prune_start=1", "mask_search.num_samples=32", "mask_search.tune_samples=32",
        "mask_search.distill_epochs=0.1"]


def _train(tmp_path: Path, method: str, model: str, *extra: str, task: str = "foods") -> dict:
    out = tmp_path / f"{model}-{method}"
    code = main(["train", "--method", method, "--model", model, "--task", task,
                 "--sparsity", "0.6", "--out", str(out), *FAST, *extra])
    assert code == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-mpnet", "tiny-t5", "tiny-llama"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_end_to_end(tmp_path, method, model):
    m = _train(tmp_path, method, model)
    assert m["method"] == method and 0.0 <= m["metric"] <= 1.0
    assert m["curve"][0]["phase"] == "start" and m["curve"][-1]["phase"] == "final"
    clock = [p for p in m["curve"] if p["phase"] != "probe"]  # probes add their search time
    assert all(b["seconds"] >= a["seconds"] for a, b in zip(clock, clock[1:]))
    probes = [p for p in m["curve"] if p["phase"] == "probe"]
    assert len(probes) == (1 if method in ("lora-prune", "mask-tuning") else 0)
    for probe in probes:  # at step 3 of 6: the pruned model as it would be if stopped there
        assert probe["step"] == 3 and abs(probe["keep_ratio"] - m["kept_params_ratio"]) < 0.02
        before = next(p for p in m["curve"] if p["step"] == 3 and p["phase"] != "probe")
        assert probe["seconds"] == pytest.approx(before["seconds"] + probe["search_seconds"],
                                                 abs=2e-3)
    if method in PRUNING:  # 60% of the body removed (k/v of grouped heads stay: up to ~46%)
        assert 0.3 < m["kept_params_ratio"] <= 0.47
    elif method == "cofi":  # 6 steps of Lagrangian warm-up only start pruning
        assert m["kept_params_ratio"] <= 1.0
    else:
        assert m["kept_params_ratio"] == 1.0 and m["sparsity"] == 0.0
    assert (tmp_path / f"{model}-{method}" / "report.md").is_file()


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-mpnet"])
def test_saved_model_reloads_with_the_same_predictions(tmp_path, model):
    m = _train(tmp_path, "apt", model, "train.measure=true",
               "train.measure_batch_sizes=[2,4]", "train.measure_seq_len=16",
               "train.reference=0.5")
    out = tmp_path / f"{model}-apt"
    reloaded = load_pretrained(out / "model")
    from lmprune.tasks import load_task
    from lmprune.zoo import build_tiny_tokenizer, load_model

    task = load_task("foods", load_model(model).model.config.model_type)
    split = task.encode(build_tiny_tokenizer(model), "validation", 128, 16, 0)
    assert task.evaluate(reloaded, split)["accuracy"] == pytest.approx(m["metric"])
    assert set(m["inference"]) >= {"2", "4"} and m["dense_inference"]["4"]["samples_per_s"] > 0
    assert m["memory"]["train"]["kind"] in ("cpu_rss_peak", "cuda_max_allocated")
    tta = m["time_to_accuracy"]
    assert tta["reference"] == 0.5 and tta["target"] == pytest.approx(0.485)
    assert (out / "training_curve.png").stat().st_size > 0


def test_init_from_reuses_a_finetuned_run_and_counts_its_time(tmp_path):
    lora = _train(tmp_path, "lora", "tiny-bert")
    pruned = _train(tmp_path, "lora-prune", "tiny-bert",
                    f"train.init_from={tmp_path / 'tiny-bert-lora'}")
    assert pruned["train_seconds"] == pytest.approx(
        lora["train_seconds"] + pruned["own_train_seconds"], abs=2e-3)
    assert pruned["kept_params_ratio"] < 0.47
    assert [u["role"] for u in pruned["upstream"]] == ["init_from"]
    memory = pruned["memory"]
    assert memory["pipeline"]["mb"] == max(memory["train"]["mb"], lora["memory"]["train"]["mb"])


def test_lora_prune_time_to_accuracy_is_measured_along_its_run(tmp_path):
    """With a reference every model reaches, the first model at the final sparsity is the
    probe at step 3 (LoRA so far plus one search), not the end of the run."""
    m = _train(tmp_path, "lora-prune", "tiny-bert", "train.reference=0.01")
    probe = next(p for p in m["curve"] if p["phase"] == "probe")
    assert m["time_to_accuracy"]["seconds"] == probe["seconds"] < m["train_seconds"]
    assert m["info"]["mask_search"]["probes"][0]["step"] == 3


def test_cofi_counts_its_teacher_run_as_a_stage(tmp_path):
    ft = _train(tmp_path, "ft", "tiny-bert")
    cofi = _train(tmp_path, "cofi", "tiny-bert", f"train.teacher={tmp_path / 'tiny-bert-ft'}")
    assert [u["role"] for u in cofi["upstream"]] == ["teacher"]
    assert cofi["train_seconds"] == pytest.approx(
        ft["train_seconds"] + cofi["own_train_seconds"], abs=2e-3)
    assert cofi["curve"][0]["seconds"] >= ft["train_seconds"]  # its clock starts after FT's
    report = (tmp_path / "tiny-bert-cofi" / "report.md").read_text()
    assert "of teacher tiny-bert-ft" in report and "whole pipeline" in report


def test_compare_reads_train_runs(tmp_path, capsys):
    _train(tmp_path, "ft", "tiny-bert")
    _train(tmp_path, "apt", "tiny-bert")
    assert main(["compare", str(tmp_path / "tiny-bert-ft"), str(tmp_path / "tiny-bert-apt")]) == 0
    out = capsys.readouterr().out
    assert "apt" in out and "ft" in out


def _squad(tmp_path: Path) -> Path:
    context = "The tea shop opened in 1998 in Leeds and sells green tea."
    qas = [{"id": f"q{i}", "question": q, "answers": ({"text": [a], "answer_start":
                                                        [context.index(a)]} if a else
                                                       {"text": [], "answer_start": []})}
           for i, (q, a) in enumerate([("When did the shop open?", "1998"),
                                       ("Where is it?", "Leeds"),
                                       ("Who owns it?", None)] * 4)]
    for q in qas:
        q["answers"] = [{"text": t, "answer_start": s} for t, s in
                        zip(q["answers"]["text"], q["answers"]["answer_start"], strict=True)]
        q["is_impossible"] = not q["answers"]
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"version": "v2.0", "data": [
        {"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}))
    return path


def test_apt_on_extractive_qa(tmp_path):
    path = _squad(tmp_path)
    m = _train(tmp_path, "apt", "tiny-bert", "train.max_len=96",
               f"train.data_files={{train: {path}, validation: {path}}}", task="squad_v2")
    assert m["metric_name"] == "f1" and "exact" in m["metrics"]
    assert m["kept_params_ratio"] < 0.47


def test_apt_on_summarization_with_t5(tmp_path):
    rows = [{"article": f"Story {i}: the cat sat on the mat all day.", "highlights": "Cat sat."}
            for i in range(12)]
    path = tmp_path / "cnn.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    m = _train(tmp_path, "apt", "tiny-t5", f"train.data_files={{train: {path}, "
               f"validation: {path}}}", task="cnn_dailymail")
    assert m["metric_name"] == "rougeL" and {"rouge1", "rouge2"} <= set(m["metrics"])


def test_bad_input_is_reported_without_traceback(tmp_path, capsys):
    assert main(["train", "--method", "aptt", "--model", "tiny-bert", "--out",
                 str(tmp_path / "x")]) == 2
    assert "apt" in capsys.readouterr().err
    assert main(["train", "--method", "apt", "--init-from", str(tmp_path), "--model",
                 "tiny-bert", "--out", str(tmp_path / "y")]) == 2
    assert main(["train", "--method", "apt", "--model", "tiny-bert", "--task", "austen",
                 "--out", str(tmp_path / "z")]) == 2
    assert not (tmp_path / "z").exists()


def test_lengths_beyond_the_models_positions_are_cut_up_front(tmp_path, capsys):
    """`train.max_len` and the measurement's 128 tokens on tiny-bert's 64 positions (the
    --help example): cut to 64 and said so, not a traceback after training."""
    m = _train(tmp_path, "apt", "tiny-bert", "train.measure=true", "train.measure_batch_sizes=[2]",
               "train.max_len=128", "train.measure_seq_len=128")
    printed = capsys.readouterr().out
    assert "train.max_len=128 is more than tiny-bert's 64 positions: using 64" in printed
    assert "train.measure_seq_len=128 is more than tiny-bert's 64 positions" in printed
    assert m["inference"]["seq_len"] == 64 and m["config"]["max_len"] == 64
    final, dense = m["inference"]["2"]["peak_memory"], m["dense_inference"]["2"]["peak_memory"]
    assert final["kind"] == dense["kind"] == "cpu_tensor_bytes" and final["mb"] < dense["mb"]
