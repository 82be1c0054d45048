"""APT and its baselines on mpnet-base (all-mpnet-base-v2, 110M) + foods at 60% sparsity.

The base-scale counterpart of benchmarks/apt_offline (same runner, same comparison and target
checks; see its run.py), on a schedule cut to fit ~10 minutes of one H200 for 7 methods x 3
seeds (README.md here has the estimate): 1,280 training reviews for 2 epochs (80 steps of 32,
sequences of 128 tokens), dev accuracy on 400 reviews every 16 steps, Kwon's search on 512
examples and mask tuning on 256, matrix products in TF32. Order and reuse as apt_offline,
except that lora-prune trains its own LoRA stage so that its pruned model is evaluated along
the run (mask_search.probes), and CoFi counts its FT teacher's training as a stage.

    python benchmarks/apt_base/run.py --out runs/apt_base                   # mpnet-base alias
    python benchmarks/apt_base/run.py --out DIR --model ~/models/mpnet-base --set all:seed=1
    python benchmarks/apt_base/run.py --out DIR --schedule long --methods ft apt lora-prune

``--schedule long`` (README.md here, "the long schedule"): APT's shape of training, where
pruning takes the first part and the pruned model trains for the rest (the authors' RoBERTa
SST-2 script: pruning until epoch 3 of 40): all 3,456 training reviews for 20 epochs at batch
128 (540 steps), dev every epoch (27 steps), APT pruning from step 16 to epoch 3 (step 81,
15% of the run). Batch 128 because at batch 32 an H200 runs a 110M model launch-bound (the
GPU of the paper's runs was compute-bound at 32); the learning rates stay those of the short
schedule.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apt_offline"))

import run as offline  # noqa: E402  (benchmarks/apt_offline/run.py)

#: Every run: the base-scale schedule on top of the shipped train-apt config.
COMMON = ("model.name=mpnet-base", "train.epochs=2", "train.max_train_samples=1280",
          "train.max_eval_samples=400", "train.eval_every=16", "train.measure_seconds=5",
          "mask_search.num_samples=512", "mask_search.tune_samples=256", "mask_search.probes=2",
          "mask_search.distill_epochs=1")
#: Per method. Learning rates: FT 2e-5 (BERT/RoBERTa-base fine-tuning), adapters 5e-4 (APT
#: trains RoBERTa-base adapters at 2e-4 for 10+ epochs; 2 epochs here). APT: pruning from step
#: 16 to 1.5 epochs (60 of 80 steps) in 8 events. CoFi: 26 fine-tuning steps (its 100, capped
#: at a third of the run), then gates at its constant 0.01 and the fit to the target.
SETTINGS = {
    "ft": ["train.lr=2e-5"],
    "lora": ["train.lr=5e-4"],
    "apt": ["train.lr=5e-4", "apt.prune_start=16", "apt.prune_stop_epochs=1.5", "apt.events=8"],
    "lora-prune": ["train.lr=5e-4"],
    "mask-tuning": ["train.init_from={out}/ft"],
    "lora-prune-distill": ["train.init_from={out}/lora", "train.lr=5e-4"],
    "cofi": ["train.teacher={out}/ft", "train.lr=5e-4"],
}


#: ``--schedule long``: overrides after COMMON (every method) and after SETTINGS (per method).
LONG_COMMON = ("train.epochs=20", "train.batch_size=128", "train.max_train_samples=3456",
               "train.eval_every=27")
LONG_SETTINGS = {"apt": ["apt.prune_stop_epochs=3"]}
SCHEDULES = ("short", "long")


def schedule(name: str) -> tuple[dict, tuple[str, ...]]:
    """(per-method settings, common overrides) of a named schedule."""
    if name not in SCHEDULES:
        raise SystemExit(f"--schedule: {name!r}; use one of {', '.join(SCHEDULES)}")
    if name == "short":
        return SETTINGS, COMMON
    settings = {m: [*s, *LONG_SETTINGS.get(m, [])] for m, s in SETTINGS.items()}
    return settings, (*COMMON, *LONG_COMMON)


def split_schedule(argv: list[str]) -> tuple[str, list[str]]:
    """``--schedule NAME`` (or ``--schedule=NAME``) taken out of ``argv``; default short."""
    rest, name, args = [], "short", iter(argv)
    for arg in args:
        if arg == "--schedule":
            name = next(args, None) or "missing"
        elif arg.startswith("--schedule="):
            name = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return name, rest


def main(argv=None) -> int:
    import torch

    name, rest = split_schedule(list(sys.argv[1:] if argv is None else argv))
    settings, common = schedule(name)
    torch.backends.cuda.matmul.allow_tf32 = True  # every method alike; ~3x on an H200
    torch.backends.cudnn.allow_tf32 = True
    return offline.main(rest, settings=settings, common=common,
                        header=f"Targets (issue 11), {name} schedule")


if __name__ == "__main__":
    sys.exit(main())
