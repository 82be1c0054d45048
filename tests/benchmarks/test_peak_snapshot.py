"""benchmarks/apt_base/peak_snapshot.py: the blocks alive at the allocator's peak."""
from __future__ import annotations

from bench_scripts import load

MB = 10 ** 6


def _frames(*names):
    return [{"filename": f, "line": i + 1, "name": "f"} for i, f in enumerate(names)]


def test_replay_finds_the_highest_moment_and_the_blocks_alive_then():
    mod = load("apt_base/peak_snapshot.py")
    # an environment under a folder named torch: only the torch package's frames are skipped
    a = _frames("/opt/torch/lib/site-packages/torch/nn/functional.py",
                "/opt/torch/lib/site-packages/transformers/m.py")
    b = _frames("/x/src/lmprune/training/apt.py")
    trace = [
        {"action": "alloc", "addr": 1, "size": 100 * MB, "frames": a},
        {"action": "alloc", "addr": 2, "size": 50 * MB, "frames": b},
        {"action": "free_requested", "addr": 1, "size": 100 * MB},  # not yet returned
        {"action": "alloc", "addr": 3, "size": 30 * MB, "frames": b},  # 180 MB
        {"action": "free_completed", "addr": 1, "size": 100 * MB},
        {"action": "alloc", "addr": 4, "size": 120 * MB, "frames": a},  # 200 MB: the peak
        {"action": "free_completed", "addr": 4, "size": 120 * MB},
        {"action": "free_completed", "addr": 99, "size": 7 * MB},  # allocated before recording
    ]
    peak, blocks = mod.alive_at_peak(trace)
    assert peak == 200 * MB
    assert sorted(b["addr"] for b in blocks) == [2, 3, 4]
    by_line = mod.groups(blocks, None)
    # the first frame outside torch; the site-packages/ and src/ prefixes cut
    assert by_line == {"transformers/m.py:2 (f)": 120.0, "lmprune/training/apt.py:1 (f)": 80.0}
    assert mod.groups(blocks, "lmprune/") == {"(no such frame)": 120.0,
                                             "lmprune/training/apt.py:1 (f)": 80.0}
