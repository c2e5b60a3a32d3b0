"""Keyframe selection by maximum 3D voxel coverage over a sliding set of frames.

Video-3D LLM picks keyframes greedily: each round takes the frame that adds the most voxels
not yet covered, until a frame budget is spent or the covered fraction of all voxels seen by
any candidate reaches a ratio; the picks are returned in time order. The reference
recomputes every gain with Python sets each round (:func:`greedy_reference`, kept here as
the test oracle). :class:`CoverageIndex` returns exactly the same selection, faster:

* Once per frame (``add``): the frame's voxel keys are mapped to dense integer ids through
  a sorted key vocabulary shared by all indexed frames (``np.searchsorted``), with per-id
  reference counts, so ``select`` never re-hashes keys.
* Per ``select``: a boolean coverage array over the dense ids and LAZY greedy: a heap of
  stale upper bounds on each frame's gain (gains only shrink as coverage grows); the top
  entry's gain is recomputed with one NumPy gather and accepted only when it still equals
  its bound, which makes it the true argmax.

Tie-break (both implementations): highest gain, then earliest ``stamp_ns``, then lowest
``frame_id``. Frames with zero gain are never picked. Stopping rule, checked before every
pick: ``len(picks) == budget`` or ``covered / total >= ratio`` (``total`` = size of the
union of the candidates' voxels, ``covered`` = size of the union of the picks' voxels).
"""
from __future__ import annotations

import heapq
import threading
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np


@dataclass(slots=True)
class Selection:
    """Result of a keyframe selection.

    ``frame_ids`` and ``stamps_ns`` are in time order; ``pick_order`` and ``gains`` (newly
    covered voxels per pick) are in greedy pick order. ``ratio`` is ``covered / total``,
    0.0 when there is nothing to cover.
    """

    frame_ids: list[int] = field(default_factory=list)
    stamps_ns: list[int] = field(default_factory=list)
    covered: int = 0
    total: int = 0
    ratio: float = 0.0
    gains: list[int] = field(default_factory=list)
    pick_order: list[int] = field(default_factory=list)


def _check_args(budget: int | None, ratio: float | None) -> None:
    if budget is not None and (int(budget) != budget or budget < 0):
        raise ValueError(f'budget must be a non-negative integer or None, got {budget}')
    if ratio is not None and not 0.0 < ratio <= 1.0:
        raise ValueError(f'ratio must be in (0, 1] or None, got {ratio}')


def _should_stop(n_picked: int, covered: int, total: int,
                 budget: int | None, ratio: float | None) -> bool:
    # Shared by both implementations so float comparisons agree bit for bit.
    if budget is not None and n_picked >= budget:
        return True
    return ratio is not None and total > 0 and covered / total >= ratio


def _finish(picks: list[tuple[int, int]], gains: list[int], covered: int,
            total: int) -> Selection:
    ordered = sorted(picks, key=lambda p: (p[1], p[0]))
    return Selection(
        frame_ids=[fid for fid, _ in ordered],
        stamps_ns=[st for _, st in ordered],
        covered=covered,
        total=total,
        ratio=covered / total if total else 0.0,
        gains=list(gains),
        pick_order=[fid for fid, _ in picks],
    )


def greedy_reference(
    sets: Mapping[int, set[int]],
    stamps: Mapping[int, int],
    budget: int | None = None,
    ratio: float | None = 0.95,
) -> Selection:
    """Plain greedy maximum coverage with Python sets, recomputing every gain every round.

    The straightforward reference (as in Video-3D LLM's offline sampler) used as the test
    oracle and benchmark baseline. Same tie-break and stopping rule as
    :meth:`CoverageIndex.select`.

    Args:
        sets: frame id -> set of voxel keys.
        stamps: frame id -> stamp in ns (for every id in ``sets``).
        budget: most frames to pick, or None.
        ratio: stop once covered/total reaches this, in (0, 1], or None.

    Returns:
        The :class:`Selection`.

    Raises:
        ValueError: on a bad budget or ratio.
    """
    _check_args(budget, ratio)
    total = len(set().union(*sets.values())) if sets else 0
    covered: set[int] = set()
    remaining = set(sets)
    picks: list[tuple[int, int]] = []
    gains: list[int] = []
    while remaining and not _should_stop(len(picks), len(covered), total, budget, ratio):
        best = min(remaining, key=lambda f: (-len(sets[f] - covered), stamps[f], f))
        gain = len(sets[best] - covered)
        if gain == 0:
            break
        covered |= sets[best]
        remaining.discard(best)
        picks.append((best, int(stamps[best])))
        gains.append(gain)
    return _finish(picks, gains, len(covered), total)


def uniform_select(frame_ids_in_time_order: Sequence[int], budget: int) -> list[int]:
    """Return ``budget`` evenly spaced ids, first and last included (all if fewer).

    Indices are ``floor(linspace(0, n - 1, budget))``, the uniform sampling used by the
    VLM-3R/LLaVA-Video frame samplers; distinct because the step is >= 1.

    Raises:
        ValueError: if budget is negative.
    """
    if int(budget) != budget or budget < 0:
        raise ValueError(f'budget must be a non-negative integer, got {budget}')
    ids = list(frame_ids_in_time_order)
    if budget >= len(ids):
        return ids
    if budget == 0:
        return []
    idx = np.linspace(0, len(ids) - 1, int(budget)).astype(np.int64)
    return [ids[i] for i in idx]


def reference_sample(frame_ids_in_time_order: Sequence[int], budget: int) -> list[int]:
    """Return the frames the official VSI-Bench evaluation feeds: the ids at
    ``linspace(0, n - 1, budget)`` cast to int, over every frame given.

    Unlike :func:`uniform_select` the result always has ``budget`` entries: with fewer
    frames than ``budget`` some repeat, as the reference's decoder returns them. Empty
    input gives []. Raises ValueError for a budget below 1.
    """
    if int(budget) != budget or budget < 1:
        raise ValueError(f'budget must be a positive integer, got {budget}')
    ids = list(frame_ids_in_time_order)
    if not ids:
        return []
    return [ids[i] for i in np.linspace(0, len(ids) - 1, int(budget), dtype=int)]


@dataclass(slots=True)
class _Entry:
    stamp_ns: int
    ids: np.ndarray  # dense voxel ids of this frame, unique, read-only


def _as_key_array(keys: Iterable[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(keys if isinstance(keys, np.ndarray) else list(keys))
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f'voxel keys must be a 1-D integer array, got {arr.dtype} {arr.shape}')
    arr = arr.astype(np.int64, copy=False)
    # voxel_keys() output is already sorted unique; only pay for np.unique otherwise.
    if arr.size > 1 and not bool(np.all(arr[1:] > arr[:-1])):
        return np.unique(arr)
    return arr


class CoverageIndex:
    """Per-frame voxel sets with fast, exact greedy maximum-coverage selection.

    ``add``/``remove`` keep a shared vocabulary of voxel keys (sorted keys -> dense ids,
    with reference counts and recycling of ids whose count drops to zero), costing
    O(V) array moves per frame for V distinct indexed voxels. ``select`` copies the
    candidate list under the lock and runs without it.

    Thread-safe: all methods may be called from any thread (e.g. ``remove`` from a
    :class:`~vlm3r_ros.pipeline.frame_buffer.FrameBuffer` ``on_evict`` in the ingest thread
    while another thread selects). ``remove`` is idempotent.
    """

    def __init__(self) -> None:
        """Create an empty index."""
        self._lock = threading.Lock()
        self._frames: dict[int, _Entry] = {}
        self._vk = np.empty(0, dtype=np.int64)  # vocabulary keys, sorted
        self._vid = np.empty(0, dtype=np.int64)  # dense id of each vocabulary key
        self._refc = np.zeros(0, dtype=np.int32)  # frames holding each dense id
        self._free = np.empty(0, dtype=np.int64)  # recyclable dense ids
        self._next_id = 0

    # ----------------------------------------------------------------- maintenance
    def add(self, frame_id: int, stamp_ns: int, keys: Iterable[int] | np.ndarray) -> None:
        """Index ``frame_id`` at ``stamp_ns`` with its voxel ``keys`` (any order, duplicates
        allowed); an id already present is replaced.

        Raises:
            ValueError: if keys are not a 1-D integer array.
        """
        keys = _as_key_array(keys)
        with self._lock:
            if frame_id in self._frames:
                self._remove_locked(frame_id)
            n_vocab = self._vk.size
            pos = np.searchsorted(self._vk, keys)
            found = np.zeros(keys.size, dtype=bool)
            if n_vocab:
                inside = pos < n_vocab
                found[inside] = self._vk[pos[inside]] == keys[inside]
            ids = np.empty(keys.size, dtype=np.int64)
            ids[found] = self._vid[pos[found]]
            new = ~found
            m = int(np.count_nonzero(new))
            if m:
                take = min(m, self._free.size)
                fresh = np.arange(self._next_id, self._next_id + m - take, dtype=np.int64)
                new_ids = np.concatenate((self._free[self._free.size - take:], fresh))
                self._free = self._free[:self._free.size - take]
                self._next_id += m - take
                ids[new] = new_ids
                # Positions are non-decreasing and keys sorted, so one insert keeps order.
                self._vk = np.insert(self._vk, pos[new], keys[new])
                self._vid = np.insert(self._vid, pos[new], new_ids)
                if self._refc.size < self._next_id:
                    grown = np.zeros(max(self._next_id, 2 * self._refc.size), dtype=np.int32)
                    grown[:self._refc.size] = self._refc
                    self._refc = grown
            self._refc[ids] += 1  # ids are unique within a frame
            ids.setflags(write=False)
            self._frames[frame_id] = _Entry(int(stamp_ns), ids)

    def remove(self, frame_id: int) -> bool:
        """Drop ``frame_id``; return True if it was indexed (False is not an error)."""
        with self._lock:
            return self._remove_locked(frame_id)

    def clear(self) -> None:
        """Drop every frame and the vocabulary."""
        with self._lock:
            self._frames.clear()
            self._vk = np.empty(0, dtype=np.int64)
            self._vid = np.empty(0, dtype=np.int64)
            self._refc = np.zeros(0, dtype=np.int32)
            self._free = np.empty(0, dtype=np.int64)
            self._next_id = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    def __contains__(self, frame_id: object) -> bool:
        with self._lock:
            return frame_id in self._frames

    def frame_ids(self) -> list[int]:
        """Return the indexed frame ids in time order (stamp, then id)."""
        with self._lock:
            items = [(e.stamp_ns, fid) for fid, e in self._frames.items()]
        return [fid for _, fid in sorted(items)]

    @property
    def n_voxels(self) -> int:
        """Number of distinct voxels over all indexed frames."""
        with self._lock:
            return int(self._vk.size)

    def _remove_locked(self, frame_id: int) -> bool:
        entry = self._frames.pop(frame_id, None)
        if entry is None:
            return False
        ids = entry.ids
        self._refc[ids] -= 1
        dead = ids[self._refc[ids] == 0]
        if dead.size:
            keep = self._refc[self._vid] > 0
            self._vk = self._vk[keep]
            self._vid = self._vid[keep]
            self._free = np.concatenate((self._free, dead))
        return True

    # ------------------------------------------------------------------- selection
    def select(
        self,
        budget: int | None = None,
        ratio: float | None = 0.95,
        window_ns: tuple[int, int] | None = None,
    ) -> Selection:
        """Pick keyframes by greedy maximum coverage (lazy evaluation, exact).

        Args:
            budget: most frames to pick (e.g. 8/16/32), or None for no limit.
            ratio: stop once covered/total reaches this, in (0, 1], or None.
            window_ns: inclusive ``(t0_ns, t1_ns)`` restricting the candidates, or None for
                all indexed frames.

        Returns:
            The :class:`Selection`, identical to :func:`greedy_reference` on the same
            candidates (see the module docstring for tie-break and stopping rule).

        Raises:
            ValueError: on a bad budget, ratio or window.
        """
        _check_args(budget, ratio)
        if window_ns is not None:
            t0, t1 = int(window_ns[0]), int(window_ns[1])
            if t0 > t1:
                raise ValueError(f'window_ns must satisfy t0 <= t1, got {window_ns}')
        with self._lock:
            if window_ns is None:
                cands = [(e.stamp_ns, fid, e.ids) for fid, e in self._frames.items()]
                total = int(self._vk.size)  # live vocabulary == union of all frames
            else:
                cands = [(e.stamp_ns, fid, e.ids) for fid, e in self._frames.items()
                         if t0 <= e.stamp_ns <= t1]
                total = -1
            n_ids = self._next_id
        if total < 0:
            mark = np.zeros(n_ids, dtype=bool)
            for _, _, ids in cands:
                mark[ids] = True
            total = int(np.count_nonzero(mark))
        return _lazy_greedy(cands, n_ids, total, budget, ratio)


def _lazy_greedy(cands: list[tuple[int, int, np.ndarray]], n_ids: int, total: int,
                 budget: int | None, ratio: float | None) -> Selection:
    # Heap entries (-gain bound, stamp, frame_id, index): min-heap order == tie-break order.
    heap = [(-int(ids.size), stamp, fid, i) for i, (stamp, fid, ids) in enumerate(cands)
            if ids.size]
    heapq.heapify(heap)
    covered_mask = np.zeros(n_ids, dtype=bool)
    fresh_in = np.full(len(cands), -1, dtype=np.int64)  # round whose gain is in the heap
    picks: list[tuple[int, int]] = []
    gains: list[int] = []
    covered = 0
    while heap and not _should_stop(len(picks), covered, total, budget, ratio):
        rnd = len(picks)
        while True:
            neg, stamp, fid, i = heap[0]
            if neg == 0 or fresh_in[i] == rnd:
                break
            ids = cands[i][2]
            gain = int(ids.size - np.count_nonzero(covered_mask[ids]))
            fresh_in[i] = rnd
            if gain == -neg:
                break
            # Bounds only shrink, so re-pushing keeps every other entry a valid bound.
            heapq.heapreplace(heap, (-gain, stamp, fid, i))
        if neg == 0:
            break  # the best upper bound is zero: nothing adds coverage
        heapq.heappop(heap)
        covered_mask[cands[i][2]] = True
        covered += -neg
        picks.append((fid, stamp))
        gains.append(-neg)
    return _finish(picks, gains, covered, total)
