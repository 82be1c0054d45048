"""DIR/results.md, DIR/results.csv and one plot per metric, from the finished runs."""
from __future__ import annotations

import platform
from pathlib import Path

from lmprune.ablation.describe import understanding, variant_table
from lmprune.ablation.expand import Ablation, slugify
from lmprune.ablation.metrics import ALWAYS, PHRASES, RSS_LABEL, quantities_for
from lmprune.ablation.plots import plot_metric
from lmprune.ablation.results import NOISE_FACTOR, Table, collect, markdown_table, write_csv


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"GPU ({torch.cuda.get_device_name()})"
    return f"CPU ({platform.processor() or platform.machine()})"


def write_plots(ablation: Ablation, table: Table, out: Path) -> list[tuple[str, Path]]:
    """One PNG per requested metric (its quantities' columns side by side)."""
    for old in out.glob("plot-*.png"):
        old.unlink()
    plots = []
    for name in ablation.metrics:
        keys = quantities_for(PHRASES[name], ablation.recipe) or (ALWAYS[ablation.recipe],)
        columns = [c.key for c in table.columns if table.quantity_of[c.key] in keys]
        path = plot_metric(table, columns, out / f"plot-{slugify(name)}.png", name)
        if path is not None:
            plots.append((name, path))
    return plots


def write_results(ablation: Ablation, out: Path) -> Path:
    """Write the table, the CSV and the plots; returns the path of results.md."""
    out = Path(out)
    table = collect(ablation, out)
    write_csv(out / "results.csv", table)
    plots = write_plots(ablation, table, out)
    expected = len(ablation.all_variants()) * len(ablation.seeds)
    finished = sum(len(row.seeds) for row in table.rows)
    lines = [f"# Ablation: {Path(ablation.plan_source).name if ablation.plan_source else 'plan'}",
             "",
             f"Method **{ablation.table.name}** ({ablation.table.description}); base config "
             f"`{ablation.base}`" + (f" with `{' '.join(ablation.overrides)}`"
                                     if ablation.overrides else "")
             + f"; seeds {', '.join(map(str, ablation.seeds))}; measured on {_device()}.",
             ""]
    if finished < expected:
        lines += [f"**Partial: {finished} of {expected} runs finished** (rerun the same "
                  f"command to resume).", ""]
    lines += ["## Results", ""] + markdown_table(table, out) + [
        "",
        f"Cells: mean ± sample std over seeds. Δ: the variant's mean minus the reference's. "
        f"*Beyond noise*: |Δ| > {NOISE_FACTOR:g} × the pooled std "
        f"(sqrt((std_ref² + std_variant²) / 2)), which needs at least 2 seeds on both sides; "
        f"with 3 seeds that is about 2.4 standard errors of the difference. Convergence "
        f"columns count seeds that reached 97% of the reference's best dev score.",
        ""]
    if any(RSS_LABEL in c.label for c in table.columns):
        lines += ["*CPU RSS* columns are the process's resident memory, and every run of this "
                  "ablation ran in the same process: a peak includes what earlier runs left "
                  "resident (the allocator keeps freed pages), so these columns are not "
                  "comparable between rows; compare memory on a GPU "
                  "(`torch.cuda.max_memory_allocated`, reset for each run).", ""]
    for name, path in plots:
        lines += [f"![{name}]({path.name})", ""]
    failed = sorted(out.glob("runs/*/seed*.error.txt"))
    if failed:
        lines += ["## Failed runs", "", "Rerun the same command to retry them.", ""]
        lines += [f"- `{f.relative_to(out)}`: " + f.read_text(encoding="utf-8").splitlines()[0]
                  for f in failed] + [""]
    lines += ["## Variants", ""] + variant_table(ablation) + [
        "", "Each run's own report is linked in the table (reports column); saved models "
        "are deleted after each run unless `--keep-models`.", "",
        "## How the plan was understood", "", "```", *understanding(ablation), "```", ""]
    path = out / "results.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(path)
    return path


def summary_lines(ablation: Ablation, out: Path) -> list[str]:
    """A short plain-text table for the terminal: variant, then mean (Δ) per column."""
    table = collect(ablation, Path(out))
    from lmprune.ablation.results import compare, number

    reference = table.rows[0]
    head = ["VARIANT", *[c.label.upper() for c in table.columns]]
    body = []
    for row in table.rows:
        cells = [row.variant.slug]
        for c in table.columns:
            cell = row.cells[c.key]
            text = number(cell.mean, c.fmt)
            comp = compare(cell, reference.cells[c.key])
            if row is not reference and comp.delta is not None:
                mark = {True: " *", False: "", None: ""}[comp.beyond]
                text += f" ({format(comp.delta, '+' + c.fmt)}{mark})"
            cells.append(text)
        body.append(cells)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(t.ljust(w) for t, w in zip(r, widths)).rstrip() for r in [head, *body]]
    return lines + ["(* : the difference to the reference is beyond the seed-to-seed noise)"]
