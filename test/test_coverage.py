"""Tests for maximum-coverage keyframe selection."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlm3r_ros.pipeline.coverage import CoverageIndex, greedy_reference, uniform_select
from vlm3r_ros.pipeline.frame_buffer import FrameBuffer


def build(sets, stamps=None):
    idx = CoverageIndex()
    stamps = stamps or {f: 100 * f for f in sets}
    for f, s in sets.items():
        idx.add(f, stamps[f], np.array(sorted(s), dtype=np.int64))
    return idx, stamps


def test_hand_checked_optimum_and_time_order():
    # Frame 2 covers most; then 0 adds {1,2}; frame 1 is a subset of frame 2 and adds nothing.
    sets = {0: {1, 2, 3}, 1: {3, 4}, 2: {3, 4, 5, 6}, 3: {6}}
    idx, stamps = build(sets)
    sel = idx.select(budget=None, ratio=None)
    assert sel.pick_order == [2, 0] and sel.gains == [4, 2]
    assert sel.frame_ids == [0, 2] and sel.stamps_ns == [0, 200]
    assert (sel.covered, sel.total, sel.ratio) == (6, 6, 1.0)
    assert idx.select(budget=1, ratio=None).frame_ids == [2]


def test_ratio_stop_and_budget():
    sets = {0: set(range(0, 50)), 1: set(range(50, 90)), 2: set(range(90, 100))}
    idx, _ = build(sets)
    assert idx.select(ratio=0.5).frame_ids == [0]  # 50/100 reaches 0.5
    assert idx.select(ratio=0.51).frame_ids == [0, 1]
    assert idx.select(ratio=0.95).frame_ids == [0, 1, 2]
    assert idx.select(budget=2, ratio=0.95).frame_ids == [0, 1]
    assert idx.select(budget=0).frame_ids == []


def test_tie_break_gain_then_stamp_then_id():
    sets = {5: {1, 2}, 3: {3, 4}, 4: {5, 6}}
    stamps = {5: 10, 3: 20, 4: 10}
    idx, _ = build(sets, stamps)
    sel = idx.select(budget=2, ratio=None)
    assert sel.pick_order == [4, 5]  # equal gains; stamp 10 before 20; id 4 before 5
    assert sel.frame_ids == [4, 5]
    assert greedy_reference(sets, stamps, 2, None).pick_order == [4, 5]


def test_window_restricts_candidates_and_total():
    sets = {0: {1, 2, 3, 4}, 1: {1, 2}, 2: {3, 9}}
    idx, _ = build(sets)
    sel = idx.select(ratio=None, window_ns=(100, 200))
    assert sel.total == 4 and sel.frame_ids == [1, 2]
    with pytest.raises(ValueError):
        idx.select(window_ns=(5, 1))


def test_zero_gain_and_empty_frames_never_picked():
    idx, _ = build({0: set(), 1: {7}, 2: {7}})
    sel = idx.select(budget=3, ratio=None)
    assert sel.frame_ids == [1] and sel.covered == 1
    assert CoverageIndex().select() == greedy_reference({}, {}, None, 0.95)
    assert CoverageIndex().select().ratio == 0.0


def test_add_replaces_remove_is_idempotent_and_ids_recycle():
    idx, _ = build({0: {1, 2}, 1: {2, 3}})
    assert idx.n_voxels == 3
    idx.add(0, 0, [10, 11, 12])
    assert idx.n_voxels == 5 and len(idx) == 2
    assert idx.remove(1) and not idx.remove(1) and 1 not in idx
    assert idx.n_voxels == 3
    idx.add(2, 50, np.array([3, 1, 3, 10]))  # unsorted with duplicates
    assert idx.frame_ids() == [0, 2]
    sel = idx.select(ratio=None)
    assert sel.total == 5 and sel.covered == 5
    idx.clear()
    assert len(idx) == 0 and idx.n_voxels == 0
    with pytest.raises(ValueError):
        idx.add(3, 0, np.array([0.5]))


def test_uniform_select():
    ids = list(range(10, 20))
    assert uniform_select(ids, 4) == [10, 13, 16, 19]
    assert uniform_select(ids, 1) == [10]
    assert uniform_select(ids, 20) == ids
    assert uniform_select(ids, 0) == []
    assert len(set(uniform_select(list(range(33)), 32))) == 32


@pytest.mark.parametrize('budget,ratio', [(-1, None), (1, 0.0), (1, 1.5), (1.5, None)])
def test_rejects_bad_arguments(budget, ratio):
    with pytest.raises(ValueError):
        CoverageIndex().select(budget, ratio)
    with pytest.raises(ValueError):
        greedy_reference({}, {}, budget, ratio)


# ---------------------------------------------------------------- property tests
frame_sets = st.dictionaries(st.integers(0, 40), st.frozensets(st.integers(0, 60), max_size=25),
                             min_size=0, max_size=14)
budgets = st.one_of(st.none(), st.integers(0, 6))
ratios = st.one_of(st.none(), st.sampled_from([0.3, 0.5, 0.9, 0.95, 1.0]))


@settings(max_examples=150, deadline=None)
@given(frame_sets, st.lists(st.integers(0, 4), min_size=41, max_size=41), budgets, ratios)
def test_select_equals_reference_greedy(sets, stamp_list, budget, ratio):
    sets = {f: set(s) for f, s in sets.items()}
    stamps = {f: stamp_list[f] for f in sets}  # few distinct stamps -> many ties
    idx, _ = build(sets, stamps)
    sel = idx.select(budget, ratio)
    ref = greedy_reference(sets, stamps, budget, ratio)
    assert sel == ref
    # Invariants stated by the API, checked independently of the reference.
    assert sel.covered == len(set().union(*(sets[f] for f in sel.frame_ids)))
    assert sel.covered == sum(sel.gains) and all(g > 0 for g in sel.gains)
    assert sel.total == len(set().union(*sets.values()))
    assert budget is None or len(sel.frame_ids) <= budget
    assert [(stamps[f], f) for f in sel.frame_ids] == sorted((stamps[f], f) for f in sel.frame_ids)
    assert sel.stamps_ns == [stamps[f] for f in sel.frame_ids]
    if ratio is not None and len(sel.frame_ids) > 1:
        # Stopped as soon as the ratio was reached: the picks before the last were short.
        before = sel.covered - sel.gains[-1]
        assert before / sel.total < ratio
    if (budget is None or len(sel.frame_ids) < budget) and ratio is not None:
        assert sel.covered == sel.total or sel.ratio >= ratio


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.integers(0, 20), st.frozensets(st.integers(0, 30), max_size=12),
                       min_size=1, max_size=8), st.integers(1, 3))
def test_greedy_within_one_minus_one_over_e_of_brute_force(sets, budget):
    idx, _ = build({f: set(s) for f, s in sets.items()})
    sel = idx.select(budget, ratio=None)
    best = max(len(set().union(*(sets[f] for f in combo)))
               for k in range(1, min(budget, len(sets)) + 1)
               for combo in itertools.combinations(sets, k))
    assert sel.covered >= math.ceil((1 - 1 / math.e) * best - 1e-9)
    assert sel.covered <= best


@settings(max_examples=60, deadline=None)
@given(st.lists(st.frozensets(st.integers(0, 80), max_size=20), min_size=1, max_size=25),
       st.integers(1, 8), st.integers(0, 6), st.one_of(st.none(), st.integers(1, 40)),
       st.integers(0, 2))
def test_eviction_through_on_evict_keeps_index_exact(frames, max_frames, budget, span, pattern):
    idx = CoverageIndex()
    buf = FrameBuffer(max_frames=max_frames, max_span_s=None if span is None else span * 0.1,
                      on_evict=lambda r: idx.remove(r.frame_id), reset_threshold_s=0.25)
    keys_of = {}
    for i, fs in enumerate(frames):
        # pattern 1 jitters stamps backwards a little (reorders), 2 loops time (resets).
        t = i * 100_000_000 - (150_000_000 if pattern == 1 and i % 3 == 2 else 0)
        if pattern == 2 and i == len(frames) // 2:
            t = 0
        res = buf.add(t, np.zeros((2, 2, 3), np.uint8))
        if not res.accepted:
            continue
        keys = np.array(sorted(fs), dtype=np.int64)
        fid = res.frame.frame_id
        idx.add(fid, t, keys)  # mirror first, then attach (see FrameBuffer docs)
        if not buf.attach(fid, voxels=keys):
            idx.remove(fid)
        keys_of[fid] = set(fs)
    live = buf.snapshot()
    assert idx.frame_ids() == [r.frame_id for r in live]
    sets = {r.frame_id: keys_of[r.frame_id] for r in live}
    stamps = {r.frame_id: r.stamp_ns for r in live}
    assert idx.select(budget, 0.9) == greedy_reference(sets, stamps, budget, 0.9)
    assert idx.n_voxels == len(set().union(*sets.values())) if sets else idx.n_voxels == 0


def test_large_random_instance_matches_reference():
    rng = np.random.default_rng(7)
    base = rng.integers(0, 5000, size=3000)
    sets, stamps = {}, {}
    idx = CoverageIndex()
    for f in range(120):
        c = rng.integers(0, 2600)
        keys = np.unique(base[c:c + rng.integers(50, 400)] + rng.integers(0, 3))
        sets[f] = set(keys.tolist())
        stamps[f] = f * 33
        idx.add(f, f * 33, keys)
    for f in range(0, 120, 7):
        idx.remove(f)
        del sets[f], stamps[f]
    for budget in (8, 16, 32, None):
        assert idx.select(budget, 0.95) == greedy_reference(sets, stamps, budget, 0.95)
    window = (500, 3000)
    in_w = {f: s for f, s in sets.items() if 500 <= stamps[f] <= 3000}
    assert idx.select(16, 0.9, window) == greedy_reference(in_w, stamps, 16, 0.9)
