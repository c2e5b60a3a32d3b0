"""Pair colour frames with depth maps that arrive on their own topic, in either order.

Like message_filters' approximate-time policy: a colour frame waits (briefly, bounded)
until the depth stream has reached its stamp, then takes the depth map of the nearest
stamp within the tolerance, or goes on without one. A depth map that arrives after its
colour frame is therefore still attached, and a frame never waits for a depth stream
that has stopped. Frames leave in stamp order.

A world reset (the stamps of either stream jump back by more than the reset threshold:
a looping bag or a clock jump) drops the depth maps of the old timeline, so the new
timeline's depth pairs from its first frame. Depth maps that never paired with a frame
and frames that left without depth are counted for the status.

Plain Python, no ROS; the node calls it from its (mutually exclusive) ingest callbacks,
so it is not thread-safe by itself.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

F = TypeVar('F')
D = TypeVar('D')

# A depth stream silent for this long (or not started this long after the first colour
# frame) is treated as stopped: frames no longer wait for it.
DEPTH_STALE_S = 1.0


@dataclass
class PairStats:
    """Counters for the status: depth maps in, paired, never paired; frames without depth."""

    depth_received: int = 0
    depth_paired: int = 0
    depth_unpaired: int = 0
    frames_without_depth: int = 0
    resets: int = 0


@dataclass
class _Depth(Generic[D]):
    stamp_ns: int
    value: D
    used: bool = False


@dataclass
class _Waiting(Generic[F]):
    stamp_ns: int
    frame: F
    arrived_s: float


@dataclass
class Paired(Generic[F, D]):
    """A colour frame leaving the pairer, with its depth map (None: none within tolerance)."""

    stamp_ns: int
    frame: F
    depth: D | None


@dataclass
class DepthPairer(Generic[F, D]):
    """Approximate-time pairing of frames and depth maps (see the module docstring).

    ``tolerance_ns``: largest stamp difference of a pair; ``wait_s``: longest a frame
    waits for the depth stream; ``reset_threshold_ns``: a stamp this far behind the
    newest of its stream starts a new timeline (0: never); ``max_depths`` /
    ``max_frames``: bounds of what is held (oldest leave first).
    """

    tolerance_ns: int = 50_000_000
    wait_s: float = 0.25
    reset_threshold_ns: int = 1_000_000_000
    max_depths: int = 16
    max_frames: int = 8
    stats: PairStats = field(default_factory=PairStats)
    _depths: list[_Depth[D]] = field(default_factory=list)
    _frames: list[_Waiting[F]] = field(default_factory=list)
    _last_depth_arrival_s: float | None = None
    _first_frame_arrival_s: float | None = None
    _newest_frame_ns: int | None = None

    # ------------------------------------------------------------------ input
    def add_depth(self, stamp_ns: int, depth: D, now_s: float) -> list[Paired[F, D]]:
        """Hold a depth map; return the frames that can leave now (in stamp order)."""
        self.stats.depth_received += 1
        out: list[Paired[F, D]] = []
        if self._depths and self._is_jump_back(stamp_ns, self._depths[-1].stamp_ns):
            # New timeline: frames of the old one leave with the old depth, then it goes.
            out += self.flush()
            self._drop_depths(lambda _d: True)
            self.stats.resets += 1
        self._last_depth_arrival_s = now_s
        stamps = [d.stamp_ns for d in self._depths]
        i = bisect.bisect_left(stamps, stamp_ns)
        if i < len(stamps) and stamps[i] == stamp_ns:
            self._count_dropped(self._depths[i])
            self._depths[i] = _Depth(stamp_ns, depth)
        else:
            self._depths.insert(i, _Depth(stamp_ns, depth))
        while len(self._depths) > self.max_depths:
            self._count_dropped(self._depths.pop(0))
        return out + self._release(now_s)

    def add_frame(self, stamp_ns: int, frame: F, now_s: float) -> list[Paired[F, D]]:
        """Queue a colour frame; return the frames that can leave now (in stamp order)."""
        out: list[Paired[F, D]] = []
        if self._first_frame_arrival_s is None:
            self._first_frame_arrival_s = now_s
        if self._newest_frame_ns is not None and \
                self._is_jump_back(stamp_ns, self._newest_frame_ns):
            out += self.flush()  # the old timeline's frames first
            self.reset_world(stamp_ns)
        self._newest_frame_ns = stamp_ns if self._newest_frame_ns is None \
            else max(self._newest_frame_ns, stamp_ns)
        stamps = [w.stamp_ns for w in self._frames]
        self._frames.insert(bisect.bisect_right(stamps, stamp_ns),
                            _Waiting(stamp_ns, frame, now_s))
        while len(self._frames) > self.max_frames:
            out.append(self._pair(self._frames.pop(0)))
        return out + self._release(now_s)

    def poll(self, now_s: float) -> list[Paired[F, D]]:
        """Return the frames whose wait is over (call it periodically)."""
        return self._release(now_s)

    def flush(self) -> list[Paired[F, D]]:
        """Return every waiting frame now, each with the best depth held for it."""
        out = [self._pair(w) for w in self._frames]
        self._frames = []
        return out

    def reset_world(self, stamp_ns: int) -> None:
        """Forget depth maps of a timeline that ended (stamped after ``stamp_ns`` plus the
        tolerance); the new timeline's maps that came just before its first frame stay."""
        limit = stamp_ns + max(self.tolerance_ns, 0)
        dropped = self._drop_depths(lambda d: d.stamp_ns > limit)
        self._newest_frame_ns = stamp_ns
        if dropped:
            self.stats.resets += 1

    def __len__(self) -> int:
        """Return the number of depth maps held."""
        return len(self._depths)

    @property
    def waiting(self) -> int:
        """Return the number of frames waiting for depth."""
        return len(self._frames)

    # ------------------------------------------------------------------ internals
    def _is_jump_back(self, stamp_ns: int, newest_ns: int) -> bool:
        return self.reset_threshold_ns > 0 and stamp_ns < newest_ns - self.reset_threshold_ns

    def _depth_stream_live(self, now_s: float) -> bool:
        """Whether frames should wait: depth arrived recently, or none yet while the
        colour stream has just started (its first depth map may come after it)."""
        last = self._last_depth_arrival_s
        if last is None:
            first = self._first_frame_arrival_s
            return first is not None and now_s - first < DEPTH_STALE_S
        return now_s - last < DEPTH_STALE_S

    def _release(self, now_s: float) -> list[Paired[F, D]]:
        """Let frames leave from the oldest while the oldest is settled."""
        out: list[Paired[F, D]] = []
        newest_depth = self._depths[-1].stamp_ns if self._depths else None
        live = self._depth_stream_live(now_s)
        while self._frames:
            head = self._frames[0]
            reached = newest_depth is not None and newest_depth >= head.stamp_ns
            if not (reached or not live or now_s - head.arrived_s >= self.wait_s):
                break
            out.append(self._pair(self._frames.pop(0)))
        return out

    def _pair(self, waiting: _Waiting[F]) -> Paired[F, D]:
        best: _Depth[D] | None = None
        for depth in self._depths:
            gap = abs(depth.stamp_ns - waiting.stamp_ns)
            if gap <= self.tolerance_ns and (
                    best is None or gap < abs(best.stamp_ns - waiting.stamp_ns)):
                best = depth
        if best is None:
            self.stats.frames_without_depth += 1
            return Paired(waiting.stamp_ns, waiting.frame, None)
        if not best.used:
            best.used = True
            self.stats.depth_paired += 1
        return Paired(waiting.stamp_ns, waiting.frame, best.value)

    def _count_dropped(self, depth: _Depth[D]) -> None:
        if not depth.used:
            self.stats.depth_unpaired += 1

    def _drop_depths(self, predicate: Any) -> int:
        kept, dropped = [], 0
        for depth in self._depths:
            if predicate(depth):
                self._count_dropped(depth)
                dropped += 1
            else:
                kept.append(depth)
        self._depths = kept
        return dropped
