"""A short history of external camera poses (odometry), looked up by frame stamp."""
from __future__ import annotations

import bisect
import threading

import numpy as np


class PoseHistory:
    """Bounded, time-sorted camera-to-world poses; thread-safe.

    Frames get the pose whose stamp is nearest to theirs, if it is within ``tolerance_ns``
    (no interpolation: odometry at 30+ Hz is close enough for voxel coverage and routes).
    """

    def __init__(self, tolerance_ns: int = 100_000_000, max_poses: int = 4096) -> None:
        """Create an empty history keeping at most ``max_poses`` poses."""
        self.tolerance_ns = tolerance_ns
        self.max_poses = max_poses
        self._stamps: list[int] = []
        self._poses: list[np.ndarray] = []
        self._lock = threading.Lock()

    def add(self, stamp_ns: int, cam_to_world: np.ndarray) -> None:
        """Insert a 4x4 pose; raises ValueError for a wrong shape or non-finite values."""
        pose = np.asarray(cam_to_world, dtype=np.float64)
        if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
            raise ValueError('pose must be a finite 4x4 matrix')
        with self._lock:
            i = bisect.bisect_left(self._stamps, stamp_ns)
            if i < len(self._stamps) and self._stamps[i] == stamp_ns:
                self._poses[i] = pose
                return
            self._stamps.insert(i, stamp_ns)
            self._poses.insert(i, pose)
            if len(self._stamps) > self.max_poses:
                del self._stamps[0], self._poses[0]

    def lookup(self, stamp_ns: int) -> np.ndarray | None:
        """Return the pose nearest to ``stamp_ns`` within the tolerance, else None."""
        with self._lock:
            i = bisect.bisect_left(self._stamps, stamp_ns)
            best = None
            for j in (i - 1, i):
                if 0 <= j < len(self._stamps):
                    gap = abs(self._stamps[j] - stamp_ns)
                    if gap <= self.tolerance_ns and (best is None or gap < best[0]):
                        best = (gap, self._poses[j])
            return None if best is None else best[1]

    def drop_after(self, stamp_ns: int) -> None:
        """Forget poses stamped after ``stamp_ns`` + tolerance (time went backwards).

        Poses of the new timeline that arrived just before its first frame are kept.
        """
        with self._lock:
            i = bisect.bisect_right(self._stamps, stamp_ns + self.tolerance_ns)
            del self._stamps[i:], self._poses[i:]

    def __len__(self) -> int:
        """Return the number of poses held."""
        return len(self._stamps)
