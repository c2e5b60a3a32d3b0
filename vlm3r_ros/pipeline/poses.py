"""Short stamped histories looked up by the nearest stamp: odometry poses, depth maps."""
from __future__ import annotations

import bisect
import threading
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar('T')


class NearestStampBuffer(Generic[T]):
    """Bounded, time-sorted values; thread-safe.

    A lookup returns the value whose stamp is nearest to the asked one if it is within
    ``tolerance_ns`` (no interpolation). Used to pair frames with odometry poses and with
    depth maps that arrive on their own topics in any order.
    """

    def __init__(self, tolerance_ns: int = 100_000_000, max_items: int = 4096) -> None:
        """Create an empty buffer keeping at most ``max_items`` values."""
        self.tolerance_ns = tolerance_ns
        self.max_items = max_items
        self._stamps: list[int] = []
        self._values: list[T] = []
        self._lock = threading.Lock()

    def add(self, stamp_ns: int, value: T) -> None:
        """Insert ``value`` at ``stamp_ns`` (replacing one with the same stamp)."""
        with self._lock:
            i = bisect.bisect_left(self._stamps, stamp_ns)
            if i < len(self._stamps) and self._stamps[i] == stamp_ns:
                self._values[i] = value
                return
            self._stamps.insert(i, stamp_ns)
            self._values.insert(i, value)
            if len(self._stamps) > self.max_items:
                del self._stamps[0], self._values[0]

    def lookup(self, stamp_ns: int) -> T | None:
        """Return the value nearest to ``stamp_ns`` within the tolerance, else None."""
        with self._lock:
            i = bisect.bisect_left(self._stamps, stamp_ns)
            best: tuple[int, T] | None = None
            for j in (i - 1, i):
                if 0 <= j < len(self._stamps):
                    gap = abs(self._stamps[j] - stamp_ns)
                    if gap <= self.tolerance_ns and (best is None or gap < best[0]):
                        best = (gap, self._values[j])
            return None if best is None else best[1]

    def drop_after(self, stamp_ns: int) -> None:
        """Forget values stamped after ``stamp_ns`` + tolerance (time went backwards).

        Values of the new timeline that arrived just before its first frame are kept.
        """
        with self._lock:
            i = bisect.bisect_right(self._stamps, stamp_ns + self.tolerance_ns)
            del self._stamps[i:], self._values[i:]

    def __len__(self) -> int:
        """Return the number of values held."""
        return len(self._stamps)


class PoseHistory(NearestStampBuffer[np.ndarray]):
    """Camera-to-world 4x4 poses (odometry or TF) by stamp."""

    def add(self, stamp_ns: int, value: Any) -> None:
        """Insert a 4x4 pose; raises ValueError for a wrong shape or non-finite values."""
        pose = np.asarray(value, dtype=np.float64)
        if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
            raise ValueError('pose must be a finite 4x4 matrix')
        super().add(stamp_ns, pose)
