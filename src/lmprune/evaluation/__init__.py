"""Evaluation helpers.

:mod:`lmprune.evaluation.lm_eval_bridge` runs pruned models (in memory or saved directories)
through lm-evaluation-harness's ``HFLM``; ``lm_eval`` itself is imported only when used.
"""
from __future__ import annotations

from lmprune.evaluation.lm_eval_bridge import make_hflm, rolling_perplexity

__all__ = ["make_hflm", "rolling_perplexity"]
