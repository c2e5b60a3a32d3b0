"""Bounded, time-ordered buffer of camera frames and the per-frame results attached later.

The image callback appends frames (``add``); the geometry worker attaches pose, voxels,
geometry and cached tokens (``attach``); the answer worker reads time-ordered snapshots.
The buffer is bounded by frame count, by time span behind the newest stamp and by bytes
(attached tokens count too), and evicts the oldest frames first.

Threading: every public method may be called from any thread (the intended use is one
ingest writer, one geometry worker attaching, several readers). A single lock guards only
the bookkeeping (sorted stamp list, two dicts, byte total): O(log n) searches plus list
memmoves and O(#arrays) byte counting. ``on_evict`` runs after the lock is released, in the
thread whose call caused the eviction, so a slow or re-entrant callback never blocks other
threads. Records are shared by reference; ``attach`` replaces attributes atomically, so a
reader sees either the old or the new value of a field.

Keeping a mirror (e.g. a :class:`~vlm3r_ros.pipeline.coverage.CoverageIndex` with
``on_evict=lambda r: index.remove(r.frame_id)``) exact under concurrent eviction: add the
frame to the mirror first, then ``attach``; if ``attach`` returns False, remove it from the
mirror again (removal must be idempotent).
"""
from __future__ import annotations

import bisect
import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

_NS = 1_000_000_000
# Fields the pipeline stages may set after ingest; identity fields stay fixed.
ATTACHABLE_FIELDS = frozenset(('depth', 'intrinsics', 'pose', 'voxels', 'geometry', 'tokens'))


def payload_nbytes(obj: Any, _depth: int = 0) -> int:
    """Return the bytes held by arrays/tensors inside ``obj`` (duck-typed, no torch import).

    Counts objects exposing ``element_size()`` and ``numel()`` (torch tensors) or an integer
    ``nbytes`` (NumPy arrays), and recurses into dicts, lists, tuples and dataclass
    instances (up to 8 levels). Anything else counts 0. Views count their own extent.
    """
    if obj is None or _depth > 8:
        return 0
    if hasattr(obj, 'element_size') and hasattr(obj, 'numel'):
        return int(obj.element_size()) * int(obj.numel())
    nb = getattr(obj, 'nbytes', None)
    if isinstance(nb, (int, np.integer)):
        return int(nb)
    if isinstance(obj, dict):
        return sum(payload_nbytes(v, _depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(payload_nbytes(v, _depth + 1) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(payload_nbytes(getattr(obj, f.name), _depth + 1)
                   for f in dataclasses.fields(obj))
    return 0


@dataclass(slots=True, eq=False)
class FrameRecord:
    """One buffered camera frame and what later stages attached to it.

    ``frame_id`` is a monotonically increasing sequence number assigned by the buffer (never
    reused, also not after a reset); ``stamp_ns`` is the sensor stamp. ``image`` (H, W, 3
    uint8 RGB) is stored by reference, never copied. Optional: ``depth`` (H, W float32 m),
    ``intrinsics`` (3, 3), ``pose`` (4, 4 camera-to-world), ``voxels`` (int64 keys),
    ``geometry`` (e.g. pointmap and confidence) and ``tokens`` (e.g. cached torch tensors).
    ``restored`` marks a frame of a loaded scene (see :meth:`FrameBuffer.restore`).
    """

    frame_id: int
    stamp_ns: int
    image: np.ndarray
    depth: np.ndarray | None = None
    intrinsics: np.ndarray | None = None
    pose: np.ndarray | None = None
    voxels: np.ndarray | None = None
    geometry: Any = None
    tokens: Any = None
    # Restored from a saved scene: exempt from the time-span bound (the count and byte
    # bounds still apply), so a scene saved long ago survives the first live frame.
    restored: bool = False

    def nbytes(self) -> int:
        """Return the bytes of all arrays and tensors held by this record."""
        return sum(payload_nbytes(getattr(self, name)) for name in
                   ('image', 'depth', 'intrinsics', 'pose', 'voxels', 'geometry', 'tokens'))


@dataclass(slots=True)
class AddResult:
    """Outcome of :meth:`FrameBuffer.add`.

    ``frame`` is the new record, or for a rejected duplicate stamp the record already
    buffered under that stamp (``accepted`` False). ``evicted`` lists the frame ids removed
    by this call (oldest first; may include the new frame itself if it arrived older than
    the span allows). ``reset`` is True when the call cleared the buffer because time went
    backwards by more than the reset threshold.
    """

    frame: FrameRecord
    evicted: list[int] = field(default_factory=list)
    reset: bool = False
    accepted: bool = True


@dataclass(frozen=True, slots=True)
class BufferStats:
    """Counters since construction plus the current size of a :class:`FrameBuffer`."""

    added: int
    evicted: int
    cleared: int
    resets: int
    dropped: int
    frames: int
    nbytes: int
    span_s: float


class FrameBuffer:
    """Time-ordered frame store bounded by count, time span and bytes.

    Policies:
      * Order: records are kept sorted by ``stamp_ns``. A stamp older than the newest by at
        most ``reset_threshold_s`` is inserted at its place in time.
      * Reset: a stamp older than the newest by more than ``reset_threshold_s`` (a looping
        bag, a restarted driver) clears the buffer (``on_evict`` for each record) and starts
        over with the new frame; ``AddResult.reset`` is True so the caller can log once.
      * Duplicate stamp: rejected. The existing record (which may already carry expensive
        geometry and tokens) is kept and returned with ``accepted=False``; counted as
        ``dropped``.
      * Bounds, applied after every add/attach, oldest first: more than ``max_frames``
        records; stamps older than ``newest - max_span_s`` (except frames of a restored
        scene); total bytes above ``max_bytes``. The newest record is never evicted for bytes, so one frame larger
        than ``max_bytes`` is still kept alone.
    """

    def __init__(
        self,
        max_frames: int,
        max_span_s: float | None = None,
        max_bytes: int | None = None,
        on_evict: Callable[[FrameRecord], None] | None = None,
        reset_threshold_s: float = 1.0,
    ) -> None:
        """Create an empty buffer.

        Args:
            max_frames: most records kept, >= 1.
            max_span_s: longest time span (newest minus oldest stamp) kept, > 0; None for
                no limit.
            max_bytes: byte budget over :meth:`FrameRecord.nbytes`, > 0; None for no limit.
            on_evict: called once with every record that leaves the buffer (eviction, reset,
                :meth:`clear`), after the internal lock is released.
            reset_threshold_s: backward jump of the stamp that clears the buffer, >= 0.

        Raises:
            ValueError: if a bound is not positive.
        """
        if int(max_frames) != max_frames or max_frames < 1:
            raise ValueError(f'max_frames must be a positive integer, got {max_frames}')
        if max_span_s is not None and not max_span_s > 0:
            raise ValueError(f'max_span_s must be > 0 or None, got {max_span_s}')
        if max_bytes is not None and not max_bytes > 0:
            raise ValueError(f'max_bytes must be > 0 or None, got {max_bytes}')
        if not reset_threshold_s >= 0:
            raise ValueError(f'reset_threshold_s must be >= 0, got {reset_threshold_s}')
        self._max_frames = int(max_frames)
        self._max_span_ns = None if max_span_s is None else int(round(max_span_s * _NS))
        self._max_bytes = None if max_bytes is None else int(max_bytes)
        self._reset_ns = int(round(reset_threshold_s * _NS))
        self._on_evict = on_evict
        self._lock = threading.Lock()
        self._stamps: list[int] = []  # sorted ascending
        self._by_stamp: dict[int, FrameRecord] = {}
        self._by_id: dict[int, FrameRecord] = {}
        self._bytes_of: dict[int, int] = {}
        self._nbytes = 0
        self._next_id = 0
        self._added = self._evicted = self._cleared = self._resets = self._dropped = 0

    # ----------------------------------------------------------------------- writes

    def set_reset_threshold(self, seconds: float) -> None:
        """Change the backward stamp jump that clears the buffer (>= 0 s)."""
        if not seconds >= 0:
            raise ValueError(f'reset_threshold_s must be >= 0, got {seconds}')
        self._reset_ns = int(round(seconds * _NS))
    def add(
        self,
        stamp_ns: int,
        image: np.ndarray,
        depth: np.ndarray | None = None,
        intrinsics: np.ndarray | None = None,
    ) -> AddResult:
        """Insert a frame (image stored by reference) and enforce the bounds.

        Returns:
            :class:`AddResult` with the record, the ids evicted by this call and the reset
            flag (see the class policies for duplicates and backward jumps).

        Raises:
            Exception: the first exception raised by ``on_evict``, after the buffer state
                is fully updated and every evicted record was reported.
        """
        stamp_ns = int(stamp_ns)
        gone: list[FrameRecord] = []
        reset = False
        with self._lock:
            # The backward jump is checked first: a looping bag repeats its stamps exactly,
            # and its first frame must reset the buffer, not be dropped as a duplicate.
            jumped_back = bool(self._stamps) and self._stamps[-1] - stamp_ns > self._reset_ns
            existing = self._by_stamp.get(stamp_ns)
            if existing is not None and not jumped_back:
                self._dropped += 1
                return AddResult(existing, [], False, accepted=False)
            if jumped_back:
                reset = True
                self._resets += 1
                gone = [self._by_stamp[s] for s in self._stamps]
                self._cleared += len(gone)
                self._drop_all_locked()
            rec = FrameRecord(self._next_id, stamp_ns, image, depth, intrinsics)
            self._next_id += 1
            nb = rec.nbytes()
            bisect.insort(self._stamps, stamp_ns)
            self._by_stamp[stamp_ns] = rec
            self._by_id[rec.frame_id] = rec
            self._bytes_of[rec.frame_id] = nb
            self._nbytes += nb
            self._added += 1
            evicted = self._enforce_locked()
            gone.extend(evicted)
        self._notify(gone)
        return AddResult(rec, [r.frame_id for r in gone], reset)

    def attach(self, frame_id: int, **fields: Any) -> bool:
        """Set later-stage fields (``pose``, ``voxels``, ``geometry``, ``tokens``, ``depth``,
        ``intrinsics``) on a buffered record and re-apply the byte bound.

        Returns:
            True if the record was buffered, updated, and is still buffered afterwards;
            False if it was already evicted (nothing set) or the byte bound evicted it.

        Raises:
            ValueError: for a field name outside the attachable set.
        """
        bad = set(fields) - ATTACHABLE_FIELDS
        if bad:
            raise ValueError(f'cannot attach {sorted(bad)}; allowed: {sorted(ATTACHABLE_FIELDS)}')
        with self._lock:
            rec = self._by_id.get(frame_id)
            if rec is None:
                return False
            for name, value in fields.items():
                setattr(rec, name, value)
            nb = rec.nbytes()
            self._nbytes += nb - self._bytes_of[frame_id]
            self._bytes_of[frame_id] = nb
            gone = self._enforce_locked()
            alive = frame_id in self._by_id
        self._notify(gone)
        return alive

    @property
    def next_id(self) -> int:
        """Return the id the next added frame gets (ids below it were issued already)."""
        with self._lock:
            return self._next_id

    def restore(self, records: list[FrameRecord],
                keep_from_id: int | None = None) -> tuple[int, list[FrameRecord]]:
        """Replace the content by ``records`` (a saved scene) in one step under the lock.

        Buffered frames with ``frame_id >= keep_from_id`` and a stamp newer than the newest
        restored one (frames that arrived while the scene was loading) are kept after the
        restored ones as NEW records without pose, voxels, geometry or tokens (they belong
        to the previous world; the old records stay valid for whoever holds them). Every
        other buffered record leaves (``on_evict`` for each, counted as cleared). The
        restored records are marked ``restored`` (exempt from the time-span bound), keep
        their order and relative ids: each gets ``frame_id + offset``, which puts the
        oldest at the next unused id, so ids are never reused. The count and byte bounds
        then apply as after an add (oldest first).

        Returns:
            ``(offset, kept)``: the id offset and the kept records (new ones), oldest first.

        Raises:
            ValueError: when ``records`` is empty or its stamps or ids are not strictly
                increasing (nothing changed).
        """
        stamps = [int(r.stamp_ns) for r in records]
        ids = [int(r.frame_id) for r in records]
        if not records or any(b <= a for a, b in zip(stamps, stamps[1:])) or \
                any(b <= a for a, b in zip(ids, ids[1:])):
            raise ValueError('restored frames must be non-empty, with strictly increasing '
                             'stamps and ids')
        with self._lock:
            keep_from = self._next_id if keep_from_id is None else keep_from_id
            current = [self._by_stamp[s] for s in self._stamps]
            newer = [r for r in current if r.frame_id >= keep_from and r.stamp_ns > stamps[-1]]
            gone = [r for r in current if not any(r is k for k in newer)]
            self._cleared += len(gone)
            self._drop_all_locked()
            offset = self._next_id - ids[0]
            for rec in records:
                rec.frame_id += offset
                rec.restored = True
            next_id = records[-1].frame_id + 1
            kept = []
            for rec in newer:
                kept.append(FrameRecord(next_id, rec.stamp_ns, rec.image, rec.depth,
                                        rec.intrinsics))
                next_id += 1
            for rec in records + kept:
                nb = rec.nbytes()
                self._stamps.append(int(rec.stamp_ns))
                self._by_stamp[rec.stamp_ns] = rec
                self._by_id[rec.frame_id] = rec
                self._bytes_of[rec.frame_id] = nb
                self._nbytes += nb
            self._added += len(records)
            self._next_id = next_id
            gone.extend(self._enforce_locked())
        self._notify(gone)
        return offset, kept

    def clear(self) -> list[int]:
        """Remove every record (``on_evict`` for each); return their ids in time order."""
        with self._lock:
            gone = [self._by_stamp[s] for s in self._stamps]
            self._cleared += len(gone)
            self._drop_all_locked()
        self._notify(gone)
        return [r.frame_id for r in gone]

    # ------------------------------------------------------------------------ reads
    def get(self, frame_id: int) -> FrameRecord | None:
        """Return the buffered record with ``frame_id``, or None if absent/evicted."""
        with self._lock:
            return self._by_id.get(frame_id)

    def __contains__(self, frame_id: object) -> bool:
        with self._lock:
            return frame_id in self._by_id

    def latest(self) -> FrameRecord | None:
        """Return the record with the newest stamp, or None if empty."""
        with self._lock:
            return self._by_stamp[self._stamps[-1]] if self._stamps else None

    def snapshot(self, t0_ns: int | None = None, t1_ns: int | None = None) -> list[FrameRecord]:
        """Return the records with ``t0_ns <= stamp_ns <= t1_ns`` (None = open) in time order.

        The list is a new list; the records are shared, not copied.
        """
        with self._lock:
            lo = 0 if t0_ns is None else bisect.bisect_left(self._stamps, int(t0_ns))
            hi = (len(self._stamps) if t1_ns is None
                  else bisect.bisect_right(self._stamps, int(t1_ns)))
            return [self._by_stamp[s] for s in self._stamps[lo:hi]]

    def __len__(self) -> int:
        with self._lock:
            return len(self._stamps)

    @property
    def span_s(self) -> float:
        """Newest minus oldest stamp in seconds (0.0 with fewer than two frames)."""
        with self._lock:
            return self._span_ns_locked() / _NS

    @property
    def nbytes(self) -> int:
        """Bytes held by all buffered records, as last measured at add/attach."""
        with self._lock:
            return self._nbytes

    def stats(self) -> BufferStats:
        """Return counters (added, evicted by bounds, cleared by reset/clear, resets,
        dropped duplicates) and the current frame count, bytes and span."""
        with self._lock:
            return BufferStats(self._added, self._evicted, self._cleared, self._resets,
                               self._dropped, len(self._stamps), self._nbytes,
                               self._span_ns_locked() / _NS)

    # --------------------------------------------------------------------- internals
    def _span_ns_locked(self) -> int:
        return self._stamps[-1] - self._stamps[0] if len(self._stamps) > 1 else 0

    def _drop_all_locked(self) -> None:
        self._stamps.clear()
        self._by_stamp.clear()
        self._by_id.clear()
        self._bytes_of.clear()
        self._nbytes = 0

    def _pop_oldest_locked(self, index: int = 0) -> FrameRecord:
        stamp = self._stamps.pop(index)
        rec = self._by_stamp.pop(stamp)
        del self._by_id[rec.frame_id]
        self._nbytes -= self._bytes_of.pop(rec.frame_id)
        self._evicted += 1
        return rec

    def _enforce_locked(self) -> list[FrameRecord]:
        gone: list[FrameRecord] = []
        while len(self._stamps) > self._max_frames:
            gone.append(self._pop_oldest_locked())
        if self._max_span_ns is not None and self._stamps:
            newest, i = self._stamps[-1], 0
            while i < len(self._stamps) and newest - self._stamps[i] > self._max_span_ns:
                if self._by_stamp[self._stamps[i]].restored:
                    i += 1  # a loaded scene's frame: only the count and byte bounds apply
                else:
                    gone.append(self._pop_oldest_locked(i))
        if self._max_bytes is not None:
            while len(self._stamps) > 1 and self._nbytes > self._max_bytes:
                gone.append(self._pop_oldest_locked())
        return gone

    def _notify(self, gone: list[FrameRecord]) -> None:
        # Every record is reported even if a callback raises; the first error is re-raised
        # afterwards so a mirror index is not left holding frames the buffer dropped.
        if self._on_evict is None:
            return
        error: BaseException | None = None
        for rec in gone:
            try:
                self._on_evict(rec)
            except Exception as exc:  # noqa: BLE001 - re-raised below
                error = error or exc
        if error is not None:
            raise error
