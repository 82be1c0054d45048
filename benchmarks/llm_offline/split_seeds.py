"""Split a benchmarks/llm_offline results.json into the per-seed files ``run.py --jobs`` resumes.

    python benchmarks/llm_offline/split_seeds.py RESULTS.json OUT

writes OUT/seed<s>/results.json with the rows of seed s (and the dense row), so that a run
with ``--out OUT --jobs N`` on a fresh machine skips the rows an earlier machine finished.
Rows already in an OUT/seed<s>/results.json are kept (the newer file wins per row).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def split(results: dict) -> dict[int, dict]:
    """{seed: {key: row}}, each with the dense row ``_dense`` when there is one."""
    parts: dict[int, dict] = {}
    for key, row in results.items():
        if key.startswith("_"):
            continue
        parts.setdefault(int(row["seed"]), {})[key] = row
    for part in parts.values():
        if "_dense" in results:
            part["_dense"] = results["_dense"]
    return parts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a results.json of run.py")
    parser.add_argument("out", type=Path, help="the --out folder of the run to resume")
    args = parser.parse_args(argv)
    if not args.results.is_file():
        parser.error(f"{args.results} does not exist")
    for seed, rows in sorted(split(json.loads(args.results.read_text())).items()):
        target = args.out / f"seed{seed}" / "results.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_file():
            rows.update(json.loads(target.read_text()))
        target.write_text(json.dumps(rows, indent=1, default=str))
        print(f"{target}: {sum(not k.startswith('_') for k in rows)} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
