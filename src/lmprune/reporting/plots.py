"""Plots for run reports (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_layer_widths(before: dict, after: dict, path: Path, title: str = "") -> Path:
    """Kept query heads and FFN neurons per layer, before vs after pruning.

    ``before``/``after`` map a layer name to {"heads": int, "neurons": int}.
    """
    plt = _pyplot()
    layers = list(before)
    x = range(len(layers))
    fig, axes = plt.subplots(2, 1, figsize=(max(6, len(layers) * 0.3), 5), sharex=True)
    for ax, key, label in ((axes[0], "heads", "query heads"), (axes[1], "neurons", "FFN neurons")):
        ax.bar(x, [before[name].get(key, 0) for name in layers], color="#d0d0d0", label="dense")
        ax.bar(x, [after.get(name, {}).get(key, 0) for name in layers], color="#1f77b4", label="kept")
        ax.set_ylabel(label)
    axes[0].legend(loc="upper right", fontsize=8)
    axes[1].set_xticks(list(x), [name.rsplit(".", 1)[-1] for name in layers], fontsize=7)
    axes[1].set_xlabel("layer")
    fig.suptitle(title or "kept widths per layer")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def layer_widths(structure) -> dict[str, dict[str, int]]:
    """{layer name: {"heads": query heads, "neurons": FFN width}} of a described model."""
    widths = {layer.name: {"heads": 0, "neurons": 0} for layer in structure.layers}
    for site in structure.attention:
        widths[site.layer]["heads"] += site.num_heads
    for site in structure.ffn:
        widths[site.layer]["neurons"] += site.width
    return widths
