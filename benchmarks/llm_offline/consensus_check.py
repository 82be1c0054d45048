"""The experiment behind ``adapruner.consensus`` (docs/adapruner.md, "The consensus"), on a CPU.

For each seed's 20% AdaPruner (TPE) search of the H200 run with the confirmation round
(``results/h200-2026-11-29-confirm``, where the consensus did not exist yet), it rebuilds the
five confirmed trials from their recorded parameters, prunes by their consensus (the mean of
their mixed importances, each divided by its mean per unit kind), and scores the consensus,
the trial the round chose and the warm-start Taylor param_second trial on 64 further fresh
calibration windows and on the confirmation windows; the consensus also on the 200 test
windows (the chosen trial's and param_second's test perplexities are the recorded rows).
fp32, as the benchmark; ~4 min per seed on 2 cores.

    PYTHONPATH=src python benchmarks/llm_offline/consensus_check.py [SEEDS...]   # TARGET=0.5 too
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402 (this folder's benchmark: settings, test windows)

from lmprune.arch import describe  # noqa: E402
from lmprune.data.calibration import build_calibration  # noqa: E402
from lmprune.pruners.adapruner import _Objective, check_calibration  # noqa: E402
from lmprune.pruners.adapruner_space import candidate_from_params, consensus_scores  # noqa: E402
from lmprune.recipes.prune import calibration_for  # noqa: E402
from lmprune.zoo import load_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "h200-2026-11-29-confirm" / "results.json"


def check(seed: int, target: float, dense, tokenizer, test, rows: dict) -> dict:
    row = rows[f"{target:.2f}/adapruner-tpe/seed{seed}"]
    history = {h["number"]: h for h in row["search"]["history"]}
    args = argparse.Namespace(model="smollm2-135m", trials=30, heldout=32, rows_per_pass=256,
                              extra=[])
    run = bench.run_config("adapruner-tpe", target, seed, args)
    calibration = calibration_for(run, tokenizer)
    fresh = build_calibration(tokenizer, run.data.calibration, run.data.split,
                              run.data.num_samples, run.data.seq_len, run.data.seed,
                              heldout=run.adapruner.heldout, pool=run.adapruner.pool_size,
                              confirm=run.adapruner.confirm + 64).confirm[-64:]
    pool, heldout = check_calibration(calibration, run)
    objective = _Objective(dense, describe(dense), run, pool, heldout)

    def candidate(h):
        return candidate_from_params(h["params"], objective.space)

    confirmed = [h for h in history.values() if h.get("confirm") is not None]
    baseline = next(h for h in history.values()
                    if h["warm_start"] and h["candidate"]["fine"] == "param_second")
    masks = {"consensus": objective.masks(consensus_scores(
                 [objective.mixed(candidate(h)) for h in confirmed])),
             "chosen": objective.masks(candidate(history[row["search"]["best_trial"]])),
             "param_second": objective.masks(candidate(baseline))}
    out = {name: {"fresh": objective.perplexity(m, fresh),
                  "confirm": objective.perplexity(m, calibration.confirm)}
           for name, m in masks.items()}
    out["consensus"]["test"] = objective.perplexity(masks["consensus"], test)
    out["chosen"]["test (recorded)"] = row["ppl"]
    return out


def main() -> int:
    torch.set_num_threads(os.cpu_count() or 1)
    target = float(os.environ.get("TARGET", "0.2"))
    rows = json.loads(RESULTS.read_text())
    loaded = load_model("smollm2-135m", "causal-lm", dtype=torch.float32)
    dense, tokenizer = loaded.model.eval(), loaded.tokenizer
    test = bench.test_windows(tokenizer, 200)
    for seed in [int(a) for a in sys.argv[1:]] or [0, 1, 2]:
        start = time.time()
        out = check(seed, target, dense, tokenizer, test, rows)
        print(f"seed {seed}: {json.dumps(out)}; {time.time() - start:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
