"""The voxelised, coloured reconstruction of the buffered frames (for ~/cloud, ~/free_space).

Each frame the geometry worker processed contributes its voxels (the same keys and voxel
size as keyframe coverage) with the mean colour of its pixels in each voxel. The
reconstruction is the union over the frames still buffered: a frame leaving the buffer
takes its contribution with it, a world reset (stamps went backwards, model reload) clears
it. A voxel's ``hits`` is the number of buffered frames that observed it (a noise filter
for obstacles); its colour is the mean over those frames.

Plain NumPy; thread-safe (the geometry worker adds, the node's output timer reads).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from vlm3r_ros.pipeline.voxels import unpack_voxel_keys, voxel_keys_per_point


@dataclass(frozen=True)
class GeometryEvent:
    """What the geometry worker made of one frame (for the odometry output).

    ``pose`` is the 4x4 camera-to-world pose the engine used (the encoder's, or the
    external one from pose_topic/TF when ``external_pose``); ``confidence`` the mean
    confidence of the encoder's pointmap (>= 1, higher is better; NaN when unknown).
    """

    stamp_ns: int
    pose: np.ndarray
    confidence: float
    external_pose: bool


@dataclass(frozen=True)
class Reconstruction:
    """A snapshot: voxel centres (N, 3) float32, colours (N, 3) uint8, hits (N,) int32.

    ``stamp_ns`` is the newest contributing frame's stamp (0 when empty); ``total`` the
    number of voxels before the ``max_points`` bound.
    """

    xyz: np.ndarray
    rgb: np.ndarray
    hits: np.ndarray
    stamp_ns: int
    total: int
    voxel_size: float


def colored_voxels(points: np.ndarray, image: np.ndarray, voxel_size: float,
                   keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (sorted unique voxel keys, mean uint8 RGB per key) of one frame.

    ``points`` is the frame's (h, w, 3) world pointmap; ``image`` its RGB frame, resized to
    the pointmap's size when it differs (exact for a pointmap of the whole frame, as with
    the 'stretch'/'vlm3r' resize modes and depth back-projection). ``keep`` (h, w) masks
    points out (e.g. below min_confidence).
    """
    pts = np.asarray(points)
    h, w = pts.shape[:2]
    rgb = np.asarray(image)
    if rgb.shape[:2] != (h, w):
        import cv2
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    keys = voxel_keys_per_point(pts, voxel_size)
    colors = rgb.reshape(-1, 3)
    valid = keys >= 0
    if keep is not None:
        valid &= np.asarray(keep, dtype=bool).reshape(-1)
    keys, colors = keys[valid], colors[valid]
    if keys.size == 0:
        return np.empty(0, np.int64), np.empty((0, 3), np.uint8)
    unique, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    mean = np.stack([np.bincount(inverse, weights=colors[:, j], minlength=unique.size)
                     for j in range(3)], axis=1) / counts[:, None]
    return unique, np.clip(np.rint(mean), 0, 255).astype(np.uint8)


class VoxelCloud:
    """Per-frame coloured voxels and their union (see the module docstring)."""

    def __init__(self, voxel_size: float) -> None:
        """Create an empty reconstruction with ``voxel_size`` metre voxels."""
        if not voxel_size > 0:
            raise ValueError(f'voxel_size must be > 0, got {voxel_size}')
        self.voxel_size = float(voxel_size)
        self._frames: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()
        self._version = 0
        self._cached: tuple[int, int, Reconstruction] | None = None

    @property
    def version(self) -> int:
        """Return a counter that changes whenever the reconstruction changes."""
        return self._version

    def __len__(self) -> int:
        """Return the number of frames contributing."""
        return len(self._frames)

    def add(self, frame_id: int, stamp_ns: int, keys: np.ndarray, rgb: np.ndarray) -> None:
        """Add (or replace) one frame's voxel keys and their colours."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        rgb = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
        if keys.shape[0] != rgb.shape[0]:
            raise ValueError(f'{keys.shape[0]} keys but {rgb.shape[0]} colours')
        with self._lock:
            self._frames[frame_id] = (int(stamp_ns), keys, rgb)
            self._version += 1

    def remove(self, frame_id: int) -> None:
        """Drop one frame's contribution (it left the buffer)."""
        with self._lock:
            if self._frames.pop(frame_id, None) is not None:
                self._version += 1

    def entries(self) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
        """Return every frame's (frame_id, stamp_ns, keys, rgb), oldest first (to save)."""
        with self._lock:
            return [(fid, *entry) for fid, entry in self._frames.items()]

    def clear(self) -> None:
        """Drop everything (world reset)."""
        with self._lock:
            self._frames.clear()
            self._version += 1

    def snapshot(self, max_points: int = 0) -> Reconstruction:
        """Return the union of the frames' voxels, at most ``max_points`` (0: all).

        Past the bound the voxels observed by the most frames are kept (ties: lower key).
        The last result is cached until the reconstruction changes.
        """
        with self._lock:
            version = self._version
            cached = self._cached
            if cached is not None and cached[0] == version and cached[1] == max_points:
                return cached[2]
            frames = list(self._frames.values())
        result = self._union(frames, max_points)
        with self._lock:
            self._cached = (version, max_points, result)
        return result

    def _union(self, frames: list[tuple[int, np.ndarray, np.ndarray]],
               max_points: int) -> Reconstruction:
        stamp = max((f[0] for f in frames), default=0)
        if not frames or sum(f[1].size for f in frames) == 0:
            return Reconstruction(np.empty((0, 3), np.float32), np.empty((0, 3), np.uint8),
                                  np.empty(0, np.int32), stamp, 0, self.voxel_size)
        keys = np.concatenate([f[1] for f in frames])
        colors = np.concatenate([f[2] for f in frames]).astype(np.float64)
        unique, inverse, hits = np.unique(keys, return_inverse=True, return_counts=True)
        mean = np.stack([np.bincount(inverse, weights=colors[:, j], minlength=unique.size)
                         for j in range(3)], axis=1) / hits[:, None]
        total = int(unique.size)
        if 0 < max_points < total:
            # Most-observed voxels first; stable sort keeps key order among equal hits.
            order = np.argsort(-hits, kind='stable')[:max_points]
            order.sort()
            unique, mean, hits = unique[order], mean[order], hits[order]
        xyz = ((unpack_voxel_keys(unique) + 0.5) * self.voxel_size).astype(np.float32)
        rgb = np.clip(np.rint(mean), 0, 255).astype(np.uint8)
        return Reconstruction(xyz, rgb, hits.astype(np.int32), stamp, total, self.voxel_size)


def mean_confidence(conf: np.ndarray | None) -> float:
    """Return the mean of a confidence map's finite values (NaN when none)."""
    if conf is None:
        return math.nan
    c = np.asarray(conf, dtype=np.float64).reshape(-1)
    c = c[np.isfinite(c)]
    return float(c.mean()) if c.size else math.nan
