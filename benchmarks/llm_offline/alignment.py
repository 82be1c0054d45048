"""How AdaPruner's coarse and fine Taylor metrics compare in scale, and which mixes differ.

Measures, on smollm2-135m with 10 x 128-token austen calibration windows (seed 0) and the
units block-wise pruning scores (heads and neurons of layers 4..27):

1. the magnitude of every metric (mean, 10/50/90th percentile over units, per kind);
2. for two readings of the alignment factors, how far the pruned set (lowest 20% of the
   neurons of every site, by the mixed score) of a mix lies from the pure rankings:
   * ``literal``: raw metrics times the paper's sets (vector 1e5/1e6/1e7, element1
     1e-2/1e-3) with α1, α2 uniform in [0, 1] (what the first implementation searched);
   * ``measured``: each metric divided by its mean over the kind's units (lmprune's reading),
     fine share ``balance`` on the 0.05 grid.
   "same as coarse" is the share of mixes whose pruned set equals the pure-vector one.

    python benchmarks/llm_offline/alignment.py --out benchmarks/llm_offline/results/alignment.json

CPU: about 4 minutes on 2 cores (the element2/param_second per-sample passes dominate).
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

from lmprune.arch import describe
from lmprune.data.calibration import build_calibration
from lmprune.pruners.adapruner_space import MIX_STEPS, Candidate, mix_scores
from lmprune.scorers.taylor import METRICS, taylor_metrics
from lmprune.zoo import load_model

PAPER = {"vector": [1e5, 1e6, 1e7], "element1": [1e-2, 1e-3]}


def pruned_sets(scores, fraction: float = 0.2) -> dict[str, frozenset]:
    out = {}
    for site, values in scores.neurons.items():
        k = int(fraction * len(values))
        out[site] = frozenset(values.double().argsort(stable=True)[:k].tolist())
    return out


def overlap(a: dict, b: dict) -> float:
    """Share of pruned neurons two selections have in common (over all sites)."""
    return sum(len(a[s] & b[s]) for s in a) / sum(len(a[s]) for s in a)


def magnitudes(results) -> dict:
    out = {}
    for metric, scores in results.items():
        for kind in ("heads", "neurons"):
            v = torch.cat([x.double() for x in getattr(scores, kind).values()])
            q = torch.quantile(v, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
            out[f"{metric}/{kind}"] = {"mean": float(v.mean()), "q10": q[0], "median": q[1],
                                       "q90": q[2]}
    return out


def readings(vector, element1, draws: int, seed: int) -> dict:
    pure_v, pure_e = pruned_sets(vector), pruned_sets(element1)
    rng = random.Random(seed)
    literal = []
    for _ in range(draws):
        a1, a2 = rng.random(), rng.random()
        s1, s2 = rng.choice(PAPER["vector"]), rng.choice(PAPER["element1"])
        cand = Candidate((0,), a2 / (a1 + a2), "element1", s1, s2)
        literal.append(pruned_sets(mix_scores(vector, element1, cand, align=False)))
    measured = [pruned_sets(mix_scores(vector, element1, Candidate((0,), i / MIX_STEPS,
                                                                    "element1")))
                for i in range(MIX_STEPS + 1)]

    def summary(sets):
        return {"same_as_coarse": sum(s == pure_v for s in sets) / len(sets),
                "same_as_fine": sum(s == pure_e for s in sets) / len(sets),
                "overlap_with_coarse": [round(overlap(s, pure_v), 4) for s in sets],
                "overlap_with_fine": [round(overlap(s, pure_e), 4) for s in sets]}

    literal_summary = summary(literal)
    for key in ("overlap_with_coarse", "overlap_with_fine"):  # the distribution, not every draw
        values = sorted(literal_summary[key])
        literal_summary[key] = {"min": values[0], "median": values[len(values) // 2],
                                "max": values[-1]}
    return {"literal": literal_summary, "measured": summary(measured),
            "coarse_vs_fine_overlap": overlap(pure_v, pure_e)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/llm_offline/results/alignment.json")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    loaded = load_model("smollm2-135m", "causal-lm")
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    structure = describe(model)
    calibration = build_calibration(tokenizer, "austen", "train", 10, 128, args.seed)
    results = taylor_metrics(model, structure, calibration.samples, METRICS,
                             kinds=("heads", "neurons"), layer_range=[4, 28], buffer_fraction=2.0)
    report = {"magnitudes": magnitudes(results),
              "readings": readings(results["vector"], results["element1"], args.draws,
                                   args.seed)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    for key, m in report["magnitudes"].items():
        print(f"{key:24s} mean {m['mean']:.3e}  median {m['median']:.3e}  "
              f"q10 {m['q10']:.3e}  q90 {m['q90']:.3e}")
    r = report["readings"]
    print(f"pure vector vs pure element1 pruned-set overlap: {r['coarse_vs_fine_overlap']:.3f}")
    for name in ("literal", "measured"):
        print(f"{name:9s}: same pruned set as pure vector in {r[name]['same_as_coarse']:.1%} "
              f"of mixes, as pure element1 in {r[name]['same_as_fine']:.1%}")
    print("measured, overlap with vector / element1 by balance:",
          list(zip(r["measured"]["overlap_with_coarse"], r["measured"]["overlap_with_fine"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
