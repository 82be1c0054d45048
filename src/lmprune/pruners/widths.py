"""Hardware-friendly FFN widths for every fine-tuning method: APT's rounding rule, shared.

APT rounds the kept FFN neurons of each site to a multiple of ``round_to`` (8 by default) at
its last pruning event (:func:`lmprune.pruners.apt_budget.select_within_budget` with
``round_to={"neurons": r}``): per site the kept count is rounded *down*, dropping the
least salient kept neurons, and the parameters freed are refilled greedily with whole chunks
of ``r`` of the most salient pruned neurons of any site. :func:`round_kept_rows` applies the
same rule to a selection another method made (Kwon's mask search, CoFi's gates), so every
method of ``lmprune train`` ends with FFN widths rounded the same way, and rounding never
increases the kept parameters: the budget is what the method had kept.

Sites that kept nothing, or everything, are left as they are (an empty FFN is skipped whole;
a full one is already aligned to its own width); a site that kept fewer than ``round_to``
neurons keeps ``round_to`` (APT's floor of one chunk per site).
"""
from __future__ import annotations

import torch

from lmprune.errors import LmpruneError
from lmprune.pruners.apt_budget import select_within_budget


def round_kept_rows(keep: torch.Tensor, salience: torch.Tensor, cost: torch.Tensor | float,
                    round_to: int) -> torch.Tensor:
    """Round each row's kept count (``keep``: binary ``[sites, units]``) to a multiple of
    ``round_to`` with APT's rule, within the parameters the rows keep now.

    ``salience`` (``[sites, units]``, higher = more important) orders the units inside a row;
    ``cost`` is the parameters of one unit (a float or one value per site). Returns a new
    binary tensor of ``keep``'s shape and dtype.
    """
    if round_to < 1:
        raise LmpruneError(f"round_to must be >= 1, got {round_to}")
    if keep.shape != salience.shape or keep.dim() != 2:
        raise LmpruneError(f"keep {tuple(keep.shape)} and salience {tuple(salience.shape)} must "
                           "be [sites, units] tensors of one shape")
    kept = keep.detach().cpu() != 0
    counts = kept.sum(1)
    rows = torch.nonzero((counts > 0) & (counts < keep.shape[1])).flatten()
    if round_to == 1 or len(rows) == 0:
        return keep.clone()
    site_cost = torch.as_tensor(cost, dtype=torch.float64).cpu().expand(keep.shape[0])[rows]
    # Density (salience / cost) in [2, 3) for kept units and [0, 1) for the others, in the
    # given salience order within each row: the budget search then keeps exactly the kept set
    # before rounding, whatever the rows' costs.
    ranks = salience.detach().cpu()[rows].double().argsort(1).argsort(1).double()
    position = (ranks + 0.5) / keep.shape[1] + 2.0 * kept[rows]
    lifted = position * site_cost[:, None]
    floor = counts[rows].clamp(min=min(round_to, keep.shape[1]))  # one chunk per site at least
    budget = float((site_cost * floor).sum()) * (1 + 1e-9)
    rounded = select_within_budget({"neurons": lifted}, {"neurons": site_cost}, budget,
                                   round_to={"neurons": round_to}, min_keep=1)["neurons"]
    out = kept.clone()
    out[rows] = rounded != 0
    return out.to(device=keep.device, dtype=keep.dtype)
