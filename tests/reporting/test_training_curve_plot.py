"""plot_training_curve writes a PNG."""
from __future__ import annotations

import pytest

from lmprune.errors import LmpruneError
from lmprune.reporting.curves import plot_training_curve

CURVE = [{"step": 0, "seconds": 0.0, "metric": 0.50, "keep_ratio": 1.0},
         {"step": 50, "seconds": 12.5, "metric": 0.80, "keep_ratio": 0.8},
         {"step": 75, "seconds": 20.0, "keep_ratio": 0.6},  # a pruning step, no evaluation
         {"step": 100, "seconds": 25.0, "metric": 0.88, "keep_ratio": 0.4}]


PROBE = {"step": 50, "seconds": 14.0, "metric": 0.7, "keep_ratio": 0.4, "phase": "probe"}


@pytest.mark.parametrize("reference", [None, 0.9])
@pytest.mark.parametrize("curve", [CURVE, CURVE + [PROBE]])
def test_writes_a_png(tmp_path, reference, curve):
    path = plot_training_curve(curve, tmp_path / "plots" / "curve.png", "accuracy",
                               reference=reference, title="apt on foods")
    data = path.read_bytes()
    assert path == tmp_path / "plots" / "curve.png"
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


def test_bad_curves_are_refused(tmp_path):
    with pytest.raises(LmpruneError, match="no points"):
        plot_training_curve([], tmp_path / "c.png", "accuracy")
    with pytest.raises(LmpruneError, match="curve entry 1 has no number under 'seconds'"):
        plot_training_curve([CURVE[0], {"metric": 1.0}], tmp_path / "c.png", "accuracy")
