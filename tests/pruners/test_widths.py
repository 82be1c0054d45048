"""APT's width rounding applied to another method's selection (pruners/widths.py)."""
from __future__ import annotations

import torch

from lmprune.pruners.widths import round_kept_rows


def _rows(*counts: int, width: int = 32) -> torch.Tensor:
    keep = torch.zeros(len(counts), width)
    for i, count in enumerate(counts):
        keep[i, :count] = 1.0
    return keep


SALIENCE = torch.arange(32.0).flip(0).expand(4, 32)  # unit 0 the most salient in every row


def test_rounds_down_then_refills_one_chunk_where_it_is_densest():
    """18 -> 16 and 31 -> 24 free 9 neurons: one chunk of 8 fits, and row 1's next chunk
    (7 of its 8 were kept) is denser than row 0's (2 of 8): row 1 goes back to 32."""
    out = round_kept_rows(_rows(18, 31, 32, 0), SALIENCE, 10.0, 8)
    assert out.sum(1).tolist() == [16.0, 32.0, 32.0, 0.0]
    assert torch.equal(out[0, :16], torch.ones(16))  # the most salient kept neurons stay


def test_never_more_parameters_and_counts_aligned():
    g = torch.Generator().manual_seed(0)
    keep = (torch.rand(4, 32, generator=g) < 0.6).float()
    salience = torch.rand(4, 32, generator=g)
    cost = torch.tensor([10.0, 10.0, 12.0, 9.0])
    out = round_kept_rows(keep, salience, cost, 8)
    assert float((out * cost[:, None]).sum()) <= float((keep * cost[:, None]).sum())
    assert all(int(c) % 8 == 0 for c in out.sum(1))
    for row in range(4):  # rounding down drops the least salient kept units first
        dropped = (keep[row] != 0) & (out[row] == 0)
        if dropped.any() and (out[row] != 0).any():
            assert salience[row][dropped].max() <= salience[row][out[row] != 0].max()


def test_small_rows_keep_one_chunk_and_round_to_one_changes_nothing():
    out = round_kept_rows(_rows(5, 24, 32, 12), SALIENCE, 10.0, 8)
    assert out.sum(1).tolist()[0] == 8.0  # APT's floor of one chunk per site
    keep = _rows(5, 23, 31, 12)
    assert torch.equal(round_kept_rows(keep, SALIENCE, 10.0, 1), keep)
