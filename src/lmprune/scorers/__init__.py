"""Importance scorers: one score per prunable unit (higher = more important).

* :func:`taylor_scores` / :func:`taylor_metrics` — LLM-Pruner's first/second-order Taylor
  importance from calibration gradients (``taylor.py``; gradients consumed by hooks in
  ``grad_accumulator.py``);
* :func:`magnitude_scores` — Lp norm of each group's weights (``magnitude.py``);
* :func:`block_influence_scores` — ShortGPT's block influence of whole layers
  (``block_influence.py``).

Every scorer returns a :class:`lmprune.pruners.selection.Scores`, which
``lmprune.pruners.selection.select`` turns into masks. Which tensor slices make up a group is
defined once, in ``coupling.py``.
"""
from lmprune.scorers.block_influence import block_influence_scores
from lmprune.scorers.magnitude import magnitude_scores
from lmprune.scorers.taylor import METRICS, taylor_metrics, taylor_scores

__all__ = ["METRICS", "block_influence_scores", "magnitude_scores", "taylor_metrics",
           "taylor_scores"]
