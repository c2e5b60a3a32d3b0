"""Compare a trajectory the node built from RGB alone with the true camera path.

With RGB only, the node's world is CUT3R's: the first camera after the last reset, in
metres (OpenCV axes). The true path is known in the scene's world; mapping it through
the inverse of the first true pose puts both in one frame, with no alignment fitted.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TrajectoryCheck:
    """How far a predicted path lies from the true one (metres).

    Attributes:
        points: number of predicted points compared.
        mean_deviation_m: mean distance of the predicted points to the true path.
        max_deviation_m: largest such distance.
        predicted_length_m: length of the predicted polyline.
        true_length_m: length of the true camera path.
    """

    points: int
    mean_deviation_m: float
    max_deviation_m: float
    predicted_length_m: float
    true_length_m: float


def to_first_camera(true_poses: np.ndarray) -> np.ndarray:
    """Return (N, 4, 4) true camera-to-world poses expressed in the first camera's frame."""
    poses = np.asarray(true_poses, dtype=np.float64)
    return np.linalg.inv(poses[0]) @ poses


def first_camera_to_world(point: np.ndarray, first_pose: np.ndarray) -> np.ndarray:
    """Map a point from the first camera's frame into the world of ``first_pose``."""
    pose = np.asarray(first_pose, dtype=np.float64)
    return pose[:3, :3] @ np.asarray(point, dtype=np.float64).reshape(3) + pose[:3, 3]


def _point_to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Return each point's distance to the polyline through ``line`` (M, 3)."""
    if len(line) == 1:
        return np.linalg.norm(points - line[0], axis=1)
    a, b = line[:-1], line[1:]
    ab = b - a
    denom = np.maximum((ab * ab).sum(axis=1), 1e-12)
    t = np.clip(((points[:, None] - a[None]) * ab[None]).sum(-1) / denom[None], 0.0, 1.0)
    closest = a[None] + t[..., None] * ab[None]
    return np.linalg.norm(points[:, None] - closest, axis=-1).min(axis=1)


def check_trajectory(predicted: np.ndarray, true_poses: np.ndarray) -> TrajectoryCheck:
    """Compare predicted positions (first-camera frame) with the true poses (world).

    Raises:
        ValueError: when either input is empty or not 3-D.
    """
    pred = np.asarray(predicted, dtype=np.float64).reshape(-1, 3)
    if not len(pred) or not len(true_poses):
        raise ValueError('both trajectories need at least one point')
    true = to_first_camera(true_poses)[:, :3, 3]
    dev = _point_to_polyline(pred, true)
    return TrajectoryCheck(len(pred), float(dev.mean()), float(dev.max()), _length(pred),
                           _length(true))


def _length(points: np.ndarray) -> float:
    """Return the length of the polyline through ``points``."""
    return float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum()) if len(points) > 1 else 0.0
