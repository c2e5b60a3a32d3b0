"""Tests for the bounded frame buffer."""
import threading

import numpy as np
import pytest
import torch

from vlm3r_ros.pipeline.frame_buffer import FrameBuffer, FrameRecord, payload_nbytes

S = 1_000_000_000  # ns per second


NS = 1_000_000_000


def img(h=4, w=4):
    return np.zeros((h, w, 3), dtype=np.uint8)


def test_add_stores_image_by_reference_and_assigns_monotonic_ids():
    buf = FrameBuffer(max_frames=10)
    a = img()
    r0 = buf.add(1 * S, a)
    r1 = buf.add(2 * S, img())
    assert r0.frame.image is a
    assert (r0.frame.frame_id, r1.frame.frame_id) == (0, 1)
    assert r0.evicted == [] and not r0.reset and r0.accepted
    assert buf.get(0) is r0.frame and buf.latest() is r1.frame
    assert len(buf) == 2 and buf.span_s == pytest.approx(1.0)


def test_evicts_oldest_by_count_and_calls_on_evict():
    seen = []
    buf = FrameBuffer(max_frames=3, on_evict=lambda r: seen.append(r.frame_id))
    results = [buf.add(i * S // 10, img()) for i in range(5)]
    assert results[3].evicted == [0] and results[4].evicted == [1]
    assert seen == [0, 1]
    assert [r.frame_id for r in buf.snapshot()] == [2, 3, 4]
    assert buf.get(0) is None and 0 not in buf and 4 in buf
    s = buf.stats()
    assert (s.added, s.evicted, s.frames) == (5, 2, 3)


def test_evicts_by_time_span_relative_to_newest():
    buf = FrameBuffer(max_frames=100, max_span_s=1.0)
    for t in (0.0, 0.4, 0.8, 1.0):
        assert buf.add(int(t * S), img()).evicted == []
    res = buf.add(int(1.5 * S), img())
    assert res.evicted == [0, 1]  # 0.0 and 0.4 are more than 1 s older than 1.5
    assert [r.stamp_ns for r in buf.snapshot()] == [int(0.8 * S), S, int(1.5 * S)]
    assert buf.span_s == pytest.approx(0.7)


def test_evicts_by_bytes_including_attached_tokens():
    frame_bytes = 4 * 4 * 3
    buf = FrameBuffer(max_frames=100, max_bytes=3 * frame_bytes)
    for i in range(3):
        buf.add(i * S // 10, img())
    assert buf.nbytes == 3 * frame_bytes and len(buf) == 3
    assert buf.add(3 * S // 10, img()).evicted == [0]
    # Attaching tokens to the newest frame grows it; older frames make room.
    tokens = torch.zeros(2 * frame_bytes // 4, dtype=torch.float32)
    assert buf.attach(3, tokens=tokens) is True
    assert [r.frame_id for r in buf.snapshot()] == [3]
    assert buf.nbytes == 3 * frame_bytes
    assert buf.stats().evicted == 3


def test_newest_frame_kept_even_if_larger_than_byte_cap():
    buf = FrameBuffer(max_frames=5, max_bytes=10)
    buf.add(0, img())
    res = buf.add(1, img())
    assert res.evicted == [0] and len(buf) == 1 and buf.latest().frame_id == 1


def test_attach_to_evicted_frame_returns_false_and_rejects_identity_fields():
    buf = FrameBuffer(max_frames=1)
    buf.add(0, img())
    buf.add(1, img())
    assert buf.attach(0, pose=np.eye(4)) is False
    assert buf.attach(1, pose=np.eye(4), voxels=np.arange(3)) is True
    assert buf.get(1).voxels.tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        buf.attach(1, stamp_ns=5)


def test_out_of_order_stamps_are_inserted_in_time_order():
    buf = FrameBuffer(max_frames=10, reset_threshold_s=1.0)
    for t in (0.0, 0.2, 0.6):
        buf.add(int(t * S), img())
    res = buf.add(int(0.4 * S), img())
    assert not res.reset and res.evicted == []
    assert [r.stamp_ns / S for r in buf.snapshot()] == [0.0, 0.2, 0.4, 0.6]
    assert buf.latest().stamp_ns == int(0.6 * S)
    assert [r.frame_id for r in buf.snapshot(int(0.2 * S), int(0.4 * S))] == [1, 3]


def test_late_frame_older_than_span_is_evicted_immediately():
    buf = FrameBuffer(max_frames=10, max_span_s=0.5, reset_threshold_s=1.0)
    buf.add(0, img())
    buf.add(S, img())  # evicts stamp 0
    res = buf.add(int(0.3 * S), img())  # 0.7 s late: within reset threshold, beyond span
    assert not res.reset and res.evicted == [res.frame.frame_id]
    assert [r.stamp_ns for r in buf.snapshot()] == [S]


def test_backwards_time_beyond_threshold_resets():
    seen = []
    buf = FrameBuffer(max_frames=10, reset_threshold_s=1.0,
                      on_evict=lambda r: seen.append(r.frame_id))
    for t in (10.0, 10.5, 11.0):
        buf.add(int(t * S), img())
    res = buf.add(int(9.9 * S), img())  # 1.1 s back: a looping bag
    assert res.reset and res.evicted == [0, 1, 2] and seen == [0, 1, 2]
    assert [r.frame_id for r in buf.snapshot()] == [3]
    s = buf.stats()
    assert (s.resets, s.cleared, s.evicted, s.frames) == (1, 3, 0, 1)
    assert buf.nbytes == 4 * 4 * 3


def test_duplicate_stamp_is_rejected_keeping_existing_record():
    buf = FrameBuffer(max_frames=10)
    first = buf.add(5, img()).frame
    buf.attach(first.frame_id, pose=np.eye(4))
    res = buf.add(5, img())
    assert not res.accepted and res.frame is first and res.frame.pose is not None
    assert len(buf) == 1 and buf.stats().dropped == 1 and buf.stats().added == 1


def test_clear_reports_all_records():
    seen = []
    buf = FrameBuffer(max_frames=4, on_evict=lambda r: seen.append(r.frame_id))
    for i in range(3):
        buf.add(i, img())
    assert buf.clear() == [0, 1, 2] and seen == [0, 1, 2] and len(buf) == 0
    assert buf.latest() is None and buf.nbytes == 0


def test_on_evict_error_is_raised_after_all_records_are_reported():
    seen = []

    def cb(rec):
        seen.append(rec.frame_id)
        if rec.frame_id == 0:
            raise RuntimeError('boom')

    buf = FrameBuffer(max_frames=5, on_evict=cb)
    for i in range(3):
        buf.add(i, img())
    with pytest.raises(RuntimeError):
        buf.clear()
    assert len(buf) == 0 and seen == [0, 1, 2]


def test_record_nbytes_counts_arrays_tensors_and_nested_containers():
    rec = FrameRecord(0, 0, img(2, 2), depth=np.zeros((2, 2), np.float32))
    rec.tokens = {'a': torch.zeros(3, dtype=torch.float16), 'b': [np.zeros(2, np.int64)]}
    assert rec.nbytes() == 12 + 16 + 6 + 16
    assert payload_nbytes('not an array') == 0


@pytest.mark.parametrize('kwargs', [dict(max_frames=0), dict(max_frames=2, max_span_s=0),
                                    dict(max_frames=2, max_bytes=-1)])
def test_rejects_bad_bounds(kwargs):
    with pytest.raises(ValueError):
        FrameBuffer(**kwargs)


def test_thread_safety_smoke_writer_attacher_and_readers():
    evicted = set()
    lock = threading.Lock()

    def on_evict(rec):
        with lock:
            evicted.add(rec.frame_id)

    buf = FrameBuffer(max_frames=16, max_span_s=0.5, max_bytes=16 * 48 * 4, on_evict=on_evict)
    n = 3000
    stop = threading.Event()
    errors = []

    def writer():
        for i in range(n):
            buf.add(i * S // 100, img())
        stop.set()

    def attacher():
        while not stop.is_set():
            rec = buf.latest()
            if rec is not None:
                buf.attach(rec.frame_id, tokens=np.zeros(8, np.float32))

    def reader():
        try:
            while not stop.is_set():
                snap = buf.snapshot()
                stamps = [r.stamp_ns for r in snap]
                assert stamps == sorted(stamps)
                assert len(snap) <= 16
                if len(snap) > 1:
                    assert stamps[-1] - stamps[0] <= S // 2
        except AssertionError as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=f) for f in (writer, attacher, reader, reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    live = {r.frame_id for r in buf.snapshot()}
    # Every frame ever added is either buffered or was reported evicted, never both.
    assert live | evicted == set(range(n)) and not (live & evicted)
    assert buf.nbytes == sum(r.nbytes() for r in buf.snapshot())
    s = buf.stats()
    assert s.added == n and s.evicted == n - len(live)


def test_looping_bag_with_identical_stamps_resets_instead_of_dropping():
    from vlm3r_ros.pipeline.frame_buffer import FrameBuffer
    buf = FrameBuffer(max_frames=100, reset_threshold_s=1.0)
    img = np.zeros((2, 2, 3), np.uint8)
    stamps = [1_000_000_000 + i * 500_000_000 for i in range(6)]
    for s in stamps:
        buf.add(s, img)
    first_again = buf.add(stamps[0], img)  # the bag starts over with the same stamps
    assert first_again.reset and first_again.accepted and len(buf) == 1
    for s in stamps[1:]:
        assert buf.add(s, img).accepted
    assert len(buf) == 6 and buf.stats().resets == 1


def test_restore_replaces_the_content_keeps_newer_frames_and_never_reuses_ids():
    evicted = []
    buf = FrameBuffer(max_frames=3, on_evict=lambda r: evicted.append(r.frame_id))
    for stamp in (10, 20, 90):
        buf.add(stamp, img())
    buf.attach(2, pose=np.eye(4))
    live = buf.get(2)
    saved = [FrameRecord(5, 30, img()), FrameRecord(7, 40, img(), pose=np.eye(4))]
    # Frame 2 arrived after the load began (keep_from_id=2): kept, as a new record.
    offset, kept = buf.restore(saved, keep_from_id=2)
    assert offset == 3 - 5  # the oldest restored frame takes the next unused id (3)
    assert [(r.frame_id, r.stamp_ns) for r in buf.snapshot()] == [(3, 30), (5, 40), (6, 90)]
    assert kept[0].stamp_ns == 90 and kept[0].pose is None  # newer frame kept, geometry gone
    assert live.frame_id == 2 and live.pose is not None  # whoever holds it still sees it whole
    assert [r.restored for r in buf.snapshot()] == [True, True, False]
    assert sorted(evicted) == [0, 1]
    assert buf.add(100, img()).frame.frame_id == 7
    assert [r.stamp_ns for r in buf.snapshot()] == [40, 90, 100]  # bounds still apply
    with pytest.raises(ValueError):
        buf.restore([FrameRecord(1, 50, img()), FrameRecord(2, 50, img())])
    assert len(buf) == 3
    # Without keep_from_id only frames added after the call are kept: none here.
    buf.restore([FrameRecord(0, 200, img())])
    assert [r.stamp_ns for r in buf.snapshot()] == [200]


def test_a_restored_scene_is_exempt_from_the_time_span_bound_only():
    buf = FrameBuffer(max_frames=4, max_span_s=1.0)
    buf.restore([FrameRecord(0, 1 * NS, img()), FrameRecord(1, 2 * NS, img())])
    buf.add(3600 * NS, img())  # an hour later: live frames obey the span, saved ones stay
    buf.add(3600 * NS + NS // 2, img())
    assert [r.stamp_ns for r in buf.snapshot()] == [NS, 2 * NS, 3600 * NS, 3600 * NS + NS // 2]
    buf.add(3602 * NS, img())  # the count evicts the oldest, the span the live ones
    assert [r.stamp_ns for r in buf.snapshot()] == [2 * NS, 3602 * NS]
    for k in range(4):
        buf.add(3603 * NS + k * NS // 4, img())  # within the span: now the count evicts it
    assert all(not r.restored for r in buf.snapshot()) and len(buf) == 4
