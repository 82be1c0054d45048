"""One PNG per requested metric: a bar per row (mean over seeds) with the std as error bar."""
from __future__ import annotations

from pathlib import Path

from lmprune.ablation.results import Table, compare

REFERENCE_COLOR, BEYOND_COLOR, WITHIN_COLOR = "#555555", "#d62728", "#9ecae1"


def plot_metric(table: Table, column_keys: list[str], path: Path, title: str) -> Path | None:
    """Horizontal bars, one panel per column of the metric; None when nothing was measured.

    The reference is grey with a dashed line at its mean; variants whose difference is beyond
    the seed-to-seed noise are red, the others light blue; error bars are one std.
    """
    from lmprune.reporting.plots import _pyplot

    columns = [c for c in table.columns if c.key in column_keys
               and any(row.cells[c.key].mean is not None for row in table.rows)]
    if not columns:
        return None
    plt = _pyplot()
    rows = table.rows
    height = max(2.5, 0.4 * len(rows) + 1.2)
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns) + 2.2, height),
                             squeeze=False, sharey=True)
    y = list(range(len(rows)))[::-1]  # the reference on top
    reference = rows[0]
    for ax, column in zip(axes[0], columns):
        means = [row.cells[column.key].mean for row in rows]
        stds = [row.cells[column.key].std or 0.0 for row in rows]
        colors = []
        for row in rows:
            beyond = compare(row.cells[column.key], reference.cells[column.key]).beyond
            colors.append(REFERENCE_COLOR if row is reference
                          else BEYOND_COLOR if beyond else WITHIN_COLOR)
        ax.barh(y, [m if m is not None else 0.0 for m in means], xerr=stds, color=colors,
                capsize=3, ecolor="black")
        for yi, m in zip(y, means):
            if m is None:
                ax.text(0, yi, " not measured / not reached", va="center", fontsize=7)
        if means[0] is not None:
            ax.axvline(means[0], color=REFERENCE_COLOR, linestyle="--", linewidth=1)
        ax.set_xlabel(column.label + ("" if column.higher_is_better is None else
                                      " (higher is better)" if column.higher_is_better
                                      else " (lower is better)"), fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    axes[0][0].set_yticks(y, [row.variant.slug for row in rows], fontsize=8)
    seeds = max((len(row.seeds) for row in rows), default=0)
    fig.suptitle(f"{title} (mean ± std over {seeds} seed(s); red: beyond seed noise)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
