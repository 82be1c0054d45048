"""The ablation table: reference + each variant, requested quantities as mean ± std over seeds.

For each quantity and variant: the mean and sample standard deviation over the seeds that
produced a value (a convergence target never reached gives no value; the cell says how many
seeds reached it), the difference of means to the reference row, and whether that
difference is **beyond the seed-to-seed noise**::

    noise = 2 * sqrt((std_ref**2 + std_variant**2) / 2)        (2 x the pooled std)
    beyond noise  <=>  |mean_variant - mean_ref| > noise         (needs >= 2 seeds each)

With 3 seeds per side, 2 pooled standard deviations are about 2.4 standard errors of the
difference of means (a two-sided Welch test at roughly the 5-10% level): a "yes" is worth
reading, a "no" means this many seeds cannot tell the variant from the reference. Quantities
that do not vary with the seed (parameter counts) have zero noise, so any change is beyond it.
"""
from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from lmprune.ablation.expand import Ablation, Variant
from lmprune.ablation.metrics import Column, Context, extract, reference_best
from lmprune.ablation.runner import is_finished, run_dir

NOISE_FACTOR = 2.0


@dataclass
class Cell:
    values: list[float | None]

    @property
    def present(self) -> list[float]:
        return [v for v in self.values if v is not None and math.isfinite(v)]

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.present) if self.present else None

    @property
    def std(self) -> float | None:
        p = self.present
        return statistics.stdev(p) if len(p) >= 2 else (0.0 if p else None)


@dataclass
class Table:
    rows: list["Row"]  # the reference first
    columns: list[Column]
    quantity_of: dict[str, str]  # column key -> the quantity that produced it


@dataclass
class Row:
    variant: Variant
    seeds: list[int]
    dirs: list[Path]
    cells: dict[str, Cell] = field(default_factory=dict)


@dataclass
class Comparison:
    delta: float | None
    noise: float | None
    beyond: bool | None  # None: fewer than 2 seeds on a side, or a missing mean


def compare(cell: Cell, reference: Cell) -> Comparison:
    if cell.mean is None or reference.mean is None:
        return Comparison(None, None, None)
    delta = cell.mean - reference.mean
    if len(cell.present) < 2 or len(reference.present) < 2:
        return Comparison(delta, None, None)
    noise = NOISE_FACTOR * math.sqrt((cell.std ** 2 + reference.std ** 2) / 2)
    return Comparison(delta, noise, abs(delta) > noise)


def collect(ablation: Ablation, out: Path) -> Table:
    """Rows (reference first) with a cell per column, from the finished runs under ``out``."""
    runs: dict[str, list[tuple[int, Path, dict]]] = {}
    for variant in ablation.all_variants():
        for seed in ablation.seeds:
            directory = run_dir(out, variant, seed)
            if is_finished(directory):
                metrics = json.loads((directory / "metrics.json").read_text(encoding="utf-8"))
                runs.setdefault(variant.slug, []).append((seed, directory, metrics))
    ctx = Context()
    if ablation.recipe == "train":
        ctx.reference_best = reference_best([m for _, _, m in runs.get("reference", [])])
    columns: dict[str, Column] = {}
    quantity_of: dict[str, str] = {}
    rows = []
    for variant in ablation.all_variants():
        mine = runs.get(variant.slug, [])
        row = Row(variant, [s for s, _, _ in mine], [d for _, d, _ in mine])
        per_run = []
        for _, _, metrics in mine:
            found = {}
            for quantity, column, value in extract(metrics, ablation.recipe,
                                                   ablation.quantities, ctx):
                columns.setdefault(column.key, column)
                quantity_of.setdefault(column.key, quantity)
                found[column.key] = value
            per_run.append(found)
        row.cells = {key: Cell([found.get(key) for found in per_run]) for key in columns}
        rows.append(row)
    for row in rows:  # columns first seen in a later row
        for key in columns:
            row.cells.setdefault(key, Cell([None] * len(row.seeds)))
    return Table(rows, list(columns.values()), quantity_of)


# ----------------------------------------------------------------------------- formatting

def number(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def mean_std(cell: Cell, column: Column, n_seeds: int) -> str:
    if cell.mean is None:
        return "not reached" if column.key.startswith("conv") and n_seeds else "-"
    text = number(cell.mean, column.fmt)
    if len(cell.present) >= 2:
        text += " ± " + number(cell.std, column.fmt)
    if len(cell.present) < n_seeds:
        text += f" ({len(cell.present)}/{n_seeds} seeds)"
    return text


def delta_text(comparison: Comparison, column: Column) -> str:
    if comparison.delta is None:
        return "-"
    text = format(comparison.delta, "+" + column.fmt)  # percentages: percentage points
    if comparison.beyond is None:
        return text
    return text + (" (beyond noise)" if comparison.beyond else " (within noise)")


def write_csv(path: Path, table: Table) -> Path:
    """One row per configuration; report paths relative to the CSV's directory."""
    rows, columns, out = table.rows, table.columns, path.parent
    reference = rows[0]
    header = ["variant", "label", "overrides", "seeds"]
    for c in columns:
        header += [f"{c.key}_mean", f"{c.key}_std", f"{c.key}_n", f"{c.key}_delta",
                   f"{c.key}_noise", f"{c.key}_beyond_noise"]
    header.append("reports")
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        for row in rows:
            line = [row.variant.slug, row.variant.label, " ".join(row.variant.overrides),
                    " ".join(map(str, row.seeds))]
            for c in columns:
                cell = row.cells[c.key]
                comp = compare(cell, reference.cells[c.key]) if row is not reference \
                    else Comparison(None, None, None)
                line += [_raw(cell.mean), _raw(cell.std if cell.present else None),
                         len(cell.present), _raw(comp.delta), _raw(comp.noise),
                         "" if comp.beyond is None else str(comp.beyond).lower()]
            line.append(" ".join(str(d.relative_to(out) / "report.md") for d in row.dirs))
            writer.writerow(line)
    tmp.replace(path)
    return path


def _raw(value: float | None) -> str:
    return "" if value is None else repr(round(value, 6))


def markdown_table(table: Table, out: Path) -> list[str]:
    rows, columns = table.rows, table.columns
    reference = rows[0]
    head = ["variant"]
    for c in columns:
        head += [c.label, "Δ"]
    head.append("reports")
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        cells = [f"**{row.variant.slug}**" if row is reference else row.variant.slug]
        for c in columns:
            cell = row.cells[c.key]
            cells.append(mean_std(cell, c, len(row.seeds)))
            cells.append("—" if row is reference
                         else delta_text(compare(cell, reference.cells[c.key]), c))
        links = " ".join(f"[s{s}]({d.relative_to(out) / 'report.md'})"
                         for s, d in zip(row.seeds, row.dirs))
        cells.append(links or "not run yet")
        lines.append("| " + " | ".join(cells) + " |")
    return lines
