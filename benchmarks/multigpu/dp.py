"""Data-parallel APT: ``lmprune train --num-gpus 2`` against one GPU, same global batch.

A BERT-base-shape encoder (12 layers, hidden 768, 12 heads, FFN 3072: the RoBERTa-base /
MPNet-base body) with random weights is saved once with a tokenizer (all-MiniLM-L6-v2's
WordPiece when the offline package is installed, else lmprune's character tokenizer); dropout is
off so that the two runs differ only by float round-off. APT then fine-tunes it on the offline
``foods`` task at 60% sparsity (Fisher salience: the salience data parallelism keeps exact,
see docs/multigpu.md) twice, through the CLI: on one GPU, and with ``--num-gpus 2``
(accelerate launch, gradients all-reduced), with the same seed and global batch. Recorded per run: training
examples per second of the training clock (evaluations excluded), the pruning log, the kept
parameters, and whether the final models agree (the same tensor shapes, i.e. the same kept
widths everywhere, and the largest relative weight difference).

``--quick``: a tiny shape, a short schedule and two CPU processes (gloo): the code path only.
Results: ``OUT/dp.json``; the runs in ``OUT/dp-runs`` (``--tag T``: ``dpT.json``, ``dp-runsT``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, max_position_embeddings=512)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            max_position_embeddings=512)


def tokenizer():
    """all-MiniLM-L6-v2's tokenizer when its offline package is here, else a char tokenizer."""
    from lmprune.errors import LmpruneError

    try:
        from transformers import AutoTokenizer

        from lmprune.zoo.packages import MINILM, package_file

        return AutoTokenizer.from_pretrained(package_file(MINILM, "minilm-l6")), "minilm-l6"
    except (LmpruneError, OSError, ValueError):
        from lmprune.zoo import build_tiny_tokenizer

        return build_tiny_tokenizer("tiny-bert"), "char"


def save_model(path: Path, shape: dict, seed: int = 0) -> dict:
    """A random-weight BERT of ``shape`` with a classification head, dropout off."""
    from transformers import BertConfig, BertForSequenceClassification

    tok, which = tokenizer()
    config = BertConfig(**shape, vocab_size=len(tok), hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, num_labels=2,
                        pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return {"params": sum(p.numel() for p in model.parameters()), "tokenizer": which,
            "shape": shape}


def train(model: Path, out: Path, processes: int, cpu: bool, settings: list[str]) -> dict:
    """One ``lmprune train`` run; its metrics.json plus the wall time of the command."""
    command = [sys.executable, "-m", "lmprune", "train", "--method", "apt", "--model",
               str(model), "--task", "foods", "--sparsity", "0.6", "--out", str(out),
               "--device", "cpu" if cpu else "cuda", *settings]
    if processes > 1:
        command += ["--num-gpus", str(processes)]
    env = {**os.environ, "NCCL_NVLS_ENABLE": os.environ.get("NCCL_NVLS_ENABLE", "0")}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["command_seconds"] = wall
    return metrics


def weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v for f in sorted((run / "model").glob("*.safetensors"))
            for k, v in load_file(f).items()}


def agreement(a: Path, b: Path) -> dict:
    """Whether the final models have the same shapes, and their largest relative difference."""
    wa, wb = weights(a), weights(b)
    same_shapes = wa.keys() == wb.keys() and all(wa[k].shape == wb[k].shape for k in wa)
    worst = 0.0
    if same_shapes:
        for k in wa:
            x, y = wa[k].double(), wb[k].double()
            worst = max(worst, float((x - y).abs().max() / x.abs().max().clamp_min(1e-12)))
    return {"same_kept_shapes": same_shapes, "max_rel_weight_diff": worst if same_shapes else None}


def summary(m: dict, batch: int) -> dict:
    return {"steps": m["steps"], "train_seconds": m["train_seconds"],
            "examples_per_s": m["steps"] * batch / m["train_seconds"],
            "kept_params_ratio": m["kept_params_ratio"], "metric": m["metric"],
            "command_seconds": m["command_seconds"],
            "pruning_log": (m.get("info") or {}).get("apt", {}).get("pruning_log"),
            "peak_train_memory": (m.get("memory") or {}).get("train")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/multigpu/results")
    parser.add_argument("--quick", action="store_true",
                        help="tiny shape, a few steps, two CPU processes (gloo)")
    parser.add_argument("--batch", type=int, default=256, help="global batch (examples/step)")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run")
    parser.add_argument("--tag", default="", help="suffix of the result names: OUT/dp<tag>.json "
                        "and OUT/dp-runs<tag> (e.g. -b512 for a second global batch)")
    args = parser.parse_args(argv)
    cpu = args.quick
    if not cpu and torch.cuda.device_count() < 2:
        print("[dp] needs 2 GPUs (or --quick)")
        return 1
    batch, steps = (8, 12) if args.quick else (args.batch, args.steps)
    out = Path(args.out)
    runs = out / f"dp-runs{args.tag}"
    model = runs / "model"
    info = save_model(model, TINY if args.quick else BASE)
    start, stop = max(1, steps // 6), max(2, steps // 2)
    settings = [f"train.batch_size={batch}", f"train.max_steps={steps}", "train.epochs=100",
                f"train.eval_every={steps // 2}", "train.measure=false", "train.progress=false",
                "train.max_eval_samples=256", "train.test_split=null", "train.resume=false",
                f"apt.prune_start={start}", "apt.events=4",
                f"apt.prune_stop_epochs={stop * batch / 4000:.4f}", "output.overwrite=true"]
    if args.quick:
        settings += ["train.max_train_samples=96", "train.max_eval_samples=16"]
    results = {"model": info, "global_batch": batch, "steps": steps, "settings": settings,
               "device": "cpu (gloo)" if cpu else torch.cuda.get_device_name(0)}
    one = train(model, runs / "1", 1, cpu, settings)
    two = train(model, runs / "2", 2, cpu, settings)
    results["one"], results["two"] = summary(one, batch), summary(two, batch)
    results["throughput_ratio"] = results["two"]["examples_per_s"] / \
        results["one"]["examples_per_s"]
    results["same_pruning_log"] = results["one"]["pruning_log"] == results["two"]["pruning_log"]
    results["agreement"] = agreement(runs / "1", runs / "2")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"dp{args.tag}.json").write_text(json.dumps(results, indent=1))
    print(f"[dp] 1 process {results['one']['examples_per_s']:.1f} ex/s, 2 processes "
          f"{results['two']['examples_per_s']:.1f} ex/s: x{results['throughput_ratio']:.2f}; "
          f"same pruning log {results['same_pruning_log']}, {results['agreement']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
