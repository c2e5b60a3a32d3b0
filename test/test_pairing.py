"""Depth pairing: either arrival order, bounded waits, world resets, counters."""
from __future__ import annotations

import random

from vlm3r_ros.pipeline.pairing import DEPTH_STALE_S, DepthPairer

MS = 1_000_000
PERIOD = 33 * MS


def pairer(**kwargs) -> DepthPairer:
    """Return a pairer with 50 ms tolerance, 0.25 s wait and a 1 s reset threshold."""
    return DepthPairer(tolerance_ns=50 * MS, wait_s=0.25, reset_threshold_ns=1000 * MS, **kwargs)


def test_depth_before_frame_pairs_at_once():
    p = pairer()
    assert p.add_depth(1000 * MS, 'd0', now_s=0.0) == []
    out = p.add_frame(1000 * MS, 'f0', now_s=0.0)
    assert [(o.frame, o.depth) for o in out] == [('f0', 'd0')]


def test_late_depth_attaches_to_the_waiting_frame():
    p = pairer()
    p.add_depth(1000 * MS, 'd0', now_s=0.0)
    p.add_frame(1000 * MS, 'f0', now_s=0.0)
    # Frame 1 is processed before its depth map: it waits instead of leaving without it,
    # even though depth 0 (33 ms away) is within the tolerance.
    assert p.add_frame(1033 * MS, 'f1', now_s=0.01) == []
    out = p.add_depth(1033 * MS, 'd1', now_s=0.02)
    assert [(o.frame, o.depth) for o in out] == [('f1', 'd1')]
    assert p.stats.frames_without_depth == 0 and p.stats.depth_paired == 2


def test_any_interleaving_pairs_every_frame_with_its_own_depth():
    rng = random.Random(3)
    p = pairer()
    events = []
    for i in range(200):
        pair = [('frame', i), ('depth', i)]
        rng.shuffle(pair)  # back to back, in either order
        events += pair
    now, out = 0.0, []
    for kind, i in events:
        now += 0.005
        stamp = 1000 * MS + i * PERIOD
        if kind == 'frame':
            out += p.add_frame(stamp, i, now)
        else:
            out += p.add_depth(stamp, f'd{i}', now)
    out += p.flush()
    assert [o.frame for o in out] == list(range(200))  # stamp order, none lost
    assert all(o.depth == f'd{o.frame}' for o in out)
    assert p.stats.frames_without_depth == 0 and p.stats.depth_unpaired == 0


def test_a_frame_never_waits_longer_than_wait_s():
    p = pairer()
    p.add_depth(1000 * MS, 'd0', now_s=0.0)
    assert p.add_frame(1500 * MS, 'f', now_s=0.0) == []  # depth stream live, not there yet
    assert p.poll(0.2) == []
    out = p.poll(0.26)
    assert [(o.frame, o.depth) for o in out] == [('f', None)]
    assert p.stats.frames_without_depth == 1


def test_the_first_frame_waits_for_the_first_depth_map():
    p = pairer()
    assert p.add_frame(1000 * MS, 'f0', now_s=0.0) == []
    assert [(o.frame, o.depth) for o in p.add_depth(1000 * MS, 'd0', 0.01)] == [('f0', 'd0')]


def test_frames_do_not_wait_for_a_depth_stream_that_stopped_or_never_started():
    p = pairer()
    assert p.add_frame(1000 * MS, 'f0', now_s=0.0) == []
    assert [o.depth for o in p.poll(0.3)] == [None]
    late = DEPTH_STALE_S + 0.1  # no depth map ever: frames stop waiting
    assert [o.depth for o in p.add_frame(1100 * MS, 'f1', now_s=late)] == [None]
    p.add_depth(1000 * MS, 'd0', now_s=5.0)
    out = p.add_frame(2000 * MS, 'f2', now_s=5.0 + DEPTH_STALE_S + 0.1)  # stream stopped
    assert [(o.frame, o.depth) for o in out] == [('f2', None)]


def test_the_nearest_depth_within_tolerance_wins():
    p = pairer()
    p.add_depth(900 * MS, 'earlier', now_s=0.0)
    assert p.add_frame(1000 * MS, 'f', now_s=0.0) == []
    p.add_depth(960 * MS, 'far', now_s=0.0)
    out = p.add_depth(1010 * MS, 'near', now_s=0.0)
    assert [o.depth for o in out] == ['near']
    p.add_frame(1200 * MS, 'g', now_s=0.0)
    out = p.add_depth(1300 * MS, 'late', now_s=0.0)  # 100 ms away: beyond the tolerance
    assert [(o.frame, o.depth) for o in out] == [('g', None)]


def test_depth_pairs_again_right_after_the_stamps_jump_back():
    # A looping bag: 10 s .. 12 s, then again from 1 s. With the old bounded nearest-stamp
    # buffer every older-stamped depth map was evicted on arrival.
    p = pairer(max_depths=8)
    now, out = 0.0, []
    for loop_start in (10_000, 1_000):
        for i in range(60):
            now += 0.03
            stamp = loop_start * MS + i * PERIOD
            out += p.add_depth(stamp, ('d', loop_start, i), now)
            out += p.add_frame(stamp, ('f', loop_start, i), now)
    out += p.flush()
    assert len(out) == 120
    assert all(o.depth == ('d',) + o.frame[1:] for o in out)
    assert p.stats.resets >= 1 and p.stats.frames_without_depth == 0


def test_unpaired_depth_is_counted_and_memory_is_bounded():
    p = pairer(max_depths=4, max_frames=3)
    for i in range(10):
        p.add_depth(1000 * MS + i * PERIOD, i, now_s=0.0)
    assert len(p) == 4 and p.stats.depth_unpaired == 6  # evicted without a frame
    p.add_depth(100 * MS, 'new timeline', now_s=0.0)  # jump back drops the old four
    assert len(p) == 1 and p.stats.depth_unpaired == 10
    out = []
    for i in range(5):
        out += p.add_frame(5000 * MS + i * PERIOD, i, now_s=0.0)
    assert p.waiting <= 3 and [o.frame for o in out] == [0, 1]
    assert p.stats.depth_received == 11
