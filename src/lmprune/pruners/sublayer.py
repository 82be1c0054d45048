"""Method ``sublayer-ri``: heterogeneous removal of whole attention / FFN sublayers by RI.

The search itself (RI, normalized RI, progressive vs one-shot, budgets) is in
:mod:`lmprune.pruners.sublayer_search`. This module maps a :class:`RunConfig` onto it:

* ``sublayer.normalize`` / ``sublayer.progressive`` / ``sublayer.budget`` /
  ``sublayer.finish`` / ``sublayer.rows_per_pass`` are passed as they are;
* ``prune.sparsity`` is the fraction of body parameters (budget ``params``) or of candidate
  sublayers (budget ``sublayers``) to remove;
* ``prune.structures``: the candidates are the ``attention`` / ``ffn`` kinds it lists; when it
  lists neither (the default ``[heads, neurons]``) both kinds are candidates, as in the paper;
* ``prune.layer_range`` restricts the candidates to those layers (``auto``: every layer);
* RI is measured on ``calibration.heldout`` when present, else on ``calibration.samples``.

The registered method returns only the masks. Code that wants the search record (per-step RI
of every candidate, perplexities, parameters removed) calls :func:`search_from_run`, which
runs the same search and returns the whole :class:`SublayerSearchResult`; :func:`plot_ri`
draws its initial scores.
"""
from __future__ import annotations

from pathlib import Path

import torch

from lmprune.arch import ModelStructure
from lmprune.errors import LmpruneError
from lmprune.pruners.sublayer_search import (
    SUBLAYER_KINDS,
    SublayerSearchResult,
    ri_search,
)
from lmprune.pruners.settings import resolve_layer_range
from lmprune.registry import METHODS
from lmprune.structures import Masks


def calibration_windows(calibration) -> torch.Tensor:
    """The windows RI is measured on: held-out windows when drawn, else the samples."""
    if calibration is None:
        raise LmpruneError("sublayer-ri measures perplexity without each sublayer and needs "
                           "calibration windows; pass a Calibration (lmprune.data.calibration."
                           "build_calibration) or set data.num_samples >= 1")
    return calibration.heldout if calibration.heldout is not None else calibration.samples


def candidate_kinds(structures) -> tuple[str, ...]:
    """Sublayer kinds named in ``prune.structures``; both when it names neither."""
    kinds = tuple(k for k in SUBLAYER_KINDS if k in structures)
    return kinds or SUBLAYER_KINDS


def search_from_run(model, structure: ModelStructure, run, calibration,
                    max_windows: int | None = None, progress: bool = True) -> SublayerSearchResult:
    """Run the RI search with the settings of ``run`` (see the module docstring)."""
    if max_windows is None:
        max_windows = run.sublayer.max_windows
    layer_range = resolve_layer_range("sublayer-ri", run.prune.layer_range, structure)
    return ri_search(model, structure, calibration_windows(calibration), run.prune.sparsity,
                     normalize=run.sublayer.normalize, progressive=run.sublayer.progressive,
                     budget=run.sublayer.budget, kinds=candidate_kinds(run.prune.structures),
                     layer_range=layer_range, max_windows=max_windows, progress=progress,
                     finish=run.sublayer.finish, rows_per_pass=run.sublayer.rows_per_pass)


@METHODS.register("sublayer-ri", help="remove whole attention/FFN sublayers with the lowest "
                                      "(normalized) relative impact on perplexity")
def prune_sublayer_ri(model, structure: ModelStructure, run, calibration=None, *,
                      report_dir: str | Path | None = None) -> Masks:
    """Scalar ``attention`` / ``ffn`` masks (0 = removed) chosen by the RI search; with
    ``report_dir``, also the search history (JSON) and the RI plot (PNG)."""
    result = search_from_run(model, structure, run, calibration)
    if report_dir is not None:
        import json

        Path(report_dir, "ri_search.json").write_text(json.dumps(result.as_dict(), indent=1))
        plot_ri(result, Path(report_dir) / "ri_per_sublayer.png")
    return result.masks


def plot_ri(result: SublayerSearchResult, path: str | Path) -> Path:
    """Bar chart of every candidate's initial ranking score (nRI or RI) by layer, as PNG.

    Attention and FFN bars sit side by side per layer in two colours; removed sublayers are
    hatched; the y axis is symmetric-log when the scores span more than two decades.
    Returns the path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    normalized = bool(result.settings.get("normalize", True))
    removed = set(result.removed)
    layers = len({c.layer for c in result.candidates})
    fig, ax = plt.subplots(figsize=(max(6.0, 0.4 * layers + 2.0), 3.5))
    for kind, offset, color in (("attention", -0.2, "tab:blue"), ("ffn", 0.2, "tab:orange")):
        chosen = [c for c in result.candidates if c.kind == kind]
        if not chosen:
            continue
        bars = ax.bar([c.layer + offset for c in chosen],
                      [result.score_initial[c.name] for c in chosen], width=0.4, color=color,
                      label=kind)
        for bar, c in zip(bars, chosen):
            if c.name in removed:
                bar.set_hatch("//")
                bar.set_edgecolor("black")
    ax.axhline(0.0, color="black", linewidth=0.5)
    scores = list(result.score_initial.values())
    magnitudes = [abs(v) for v in scores if v != 0]
    logscale = bool(magnitudes) and max(magnitudes) > 100 * min(magnitudes)
    if logscale:  # RI spans decades (SmolLM2: 1e-2 to 4e3); symlog keeps the sign
        ax.set_yscale("symlog", linthresh=min(magnitudes))
    if scores and min(scores) < 0:  # bars start at 0, which autoscaling would not go below
        ax.set_ylim(bottom=min(scores) * (3.0 if logscale else 1.1))
    ax.set_xlabel("layer")
    ax.set_ylabel("RI / parameters" if normalized else "RI")
    ax.set_title(f"initial {'normalized ' if normalized else ''}relative impact "
                 f"(hatched: removed, {len(removed)})")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    plt.close(fig)
    return path
