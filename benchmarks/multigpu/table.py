"""The short table of benchmarks/multigpu: OUT/results.md from OUT/spread-*.json and dp*.json."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _peaks(entry: dict) -> str:
    return " / ".join(f"{v:.1f}" for v in entry["peak_gib"].values())


def spread_rows(result: dict) -> list[str]:
    shape = f"{result['shape']} ({result['params'] / 1e9:.1f}B, {len(result['devices'])} dev)"
    rows = [f"| {shape} spread | {step} | {result[key]['seconds']:.1f} | {_peaks(result[key])} |"
            for step, key in (("Taylor element1", "taylor_element1"), ("RI step", "ri_step"),
                              ("3 recovery steps", "recovery_3_steps"))]
    single = result.get("single_device")
    if single:
        check = single["spread_vs_single"]
        noise = single["single_vs_single"]["max_rel_diff"]
        rows.append(f"| {shape} one device | Taylor element1 | {single['seconds']:.1f} | "
                    f"{_peaks(single)} |")
        rows.append(f"| {shape} | spread vs one device: max rel diff {check['max_rel_diff']:.1e} "
                    f"(one device twice: {noise:.1e}), same kept at 20%: "
                    f"{'yes' if check['same_kept_at_20pct'] else 'NO'} | | |")
    return rows


def dp_rows(result: dict) -> list[str]:
    one, two = result["one"], result["two"]
    agree = result["agreement"]
    return [f"| APT data parallel, batch {result['global_batch']} | 1 process | "
            f"{one['train_seconds']:.1f} | {one['examples_per_s']:.1f} ex/s |",
            f"| APT data parallel, batch {result['global_batch']} | 2 processes | "
            f"{two['train_seconds']:.1f} | {two['examples_per_s']:.1f} ex/s "
            f"(x{result['throughput_ratio']:.2f}) |",
            f"| APT data parallel | same pruning log: {'yes' if result['same_pruning_log'] else 'NO'}"
            f", same kept shapes: {'yes' if agree['same_kept_shapes'] else 'NO'}, max rel weight "
            f"diff {agree['max_rel_weight_diff'] if agree['max_rel_weight_diff'] is None else format(agree['max_rel_weight_diff'], '.1e')} | | |"]


def main(out: str) -> int:
    root = Path(out)
    lines = ["| run | step | seconds | peak GiB per device / throughput |", "|---|---|---|---|"]
    for path in sorted(root.glob("spread-*.json")):
        lines += spread_rows(json.loads(path.read_text()))
    for path in sorted(root.glob("dp*.json"), key=lambda p: json.loads(p.read_text())
                       .get("global_batch", 0)):  # dp.json (batch 256), dp-b512.json, ...
        lines += dp_rows(json.loads(path.read_text()))
    text = "\n".join(lines) + "\n"
    (root / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/multigpu/results"))
