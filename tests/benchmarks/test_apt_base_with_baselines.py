"""benchmarks/apt_base/with_baselines.py: a variant's APT rows beside the main run's baselines."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench_scripts import load


def _module():
    return load("apt_base/with_baselines.py")


def _write(path: Path, rows: list[dict]) -> None:
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(rows))


def test_variant_rows_replace_the_main_runs_and_get_ft_relative_accuracy(tmp_path):
    main, variant = tmp_path / "main", tmp_path / "variant"
    _write(main / "seed0", [{"method": "ft", "metric": 0.8},
                            {"method": "apt", "metric": 0.7, "relative_accuracy": 0.875},
                            {"method": "lora", "metric": 0.79}])
    _write(variant / "seed0", [{"method": "apt", "metric": 0.76, "relative_accuracy": None}])
    [out] = _module().merge(main, variant, tmp_path / "out")
    rows = {r["method"]: r for r in json.loads((out / "results.json").read_text())}
    assert set(rows) == {"ft", "lora", "apt"}
    assert rows["apt"]["metric"] == 0.76
    assert rows["apt"]["relative_accuracy"] == pytest.approx(0.95)
    assert rows["apt"]["reference"] == 0.8


def test_a_seed_missing_from_the_main_run_is_an_error(tmp_path):
    _write(tmp_path / "variant" / "seed1", [{"method": "apt", "metric": 0.7}])
    (tmp_path / "main").mkdir()
    with pytest.raises(SystemExit, match="seed1"):
        _module().merge(tmp_path / "main", tmp_path / "variant", tmp_path / "out")
