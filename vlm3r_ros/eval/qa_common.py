"""Shared pieces of the ground-truth QA generator: visibility, frame sampling, option
labels, angles, oriented-box distances and the per-scene context the task generators read.

The task generators live in :mod:`vlm3r_ros.eval.qa_tasks_vsi` (VSI-Bench tasks) and
:mod:`vlm3r_ros.eval.qa_tasks_vsti` (VSTI-Bench camera tasks); :mod:`vlm3r_ros.eval.qa`
is the public entry point (:func:`~vlm3r_ros.eval.qa.generate_qa`).
"""
from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from vlm3r_ros.eval.render import render_ids, scale_intrinsics
from vlm3r_ros.eval.scenes import (Scene, SceneObject, Trajectory, object_distance,
                                   point_object_distance)

LETTERS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ'
RULES: tuple[str, ...] = ('official', 'exact')

Candidate = dict[str, Any]


@dataclass(frozen=True)
class Visibility:
    """Pixel counts (frames, objects) of each object in each trajectory frame, from
    id renders of ``image_pixels`` pixels; column j is the object with instance id j."""

    pixels: np.ndarray
    image_pixels: int

    def visible(self, min_fraction: float) -> np.ndarray:
        """Return a boolean (frames, objects) mask of objects covering >= min_fraction."""
        return self.pixels >= max(1.0, min_fraction * self.image_pixels)


def compute_visibility(scene: Scene, trajectory: Trajectory, K: np.ndarray, width: int,
                       height: int, scale: float = 0.5) -> Visibility:
    """Return per-frame object pixel counts from id renders at ``scale`` x resolution.

    Raises ValueError when the scaled image would be empty or ids are not 0..n-1.
    """
    w, h = int(round(width * scale)), int(round(height * scale))
    if w <= 0 or h <= 0:
        raise ValueError('scaled visibility image is empty')
    ids = [o.instance_id for o in scene.objects]
    if ids != list(range(len(ids))):
        raise ValueError('scene object ids must be 0..n-1 in order')
    k_small = scale_intrinsics(K, w / width, h / height)
    counts = np.zeros((len(trajectory), len(ids)), dtype=np.int32)
    for i, pose in enumerate(trajectory.poses):
        id_map = render_ids(scene, pose, k_small, w, h)
        vals = id_map[id_map >= 0]
        if vals.size:
            counts[i] = np.bincount(vals, minlength=len(ids))[:len(ids)]
    return Visibility(pixels=counts, image_pixels=w * h)


def sample_frame_indices(total: int, num_frames: int) -> np.ndarray:
    """Return ``num_frames`` trajectory indices spread uniformly over [0, total-1]
    (all indices when there are fewer frames). Raises ValueError when total < 1."""
    if total < 1:
        raise ValueError('need at least one frame')
    n = min(int(num_frames), total)
    return np.round(np.linspace(0, total - 1, n)).astype(int)


def label_options(texts: Sequence[str]) -> list[str]:
    """Return options labelled 'A. text', 'B. text', ... (VSI-Bench option format)."""
    return [f'{LETTERS[i]}. {t}' for i, t in enumerate(texts)]


def mc(correct: str, distractors: Sequence[str], rng: np.random.Generator
       ) -> tuple[list[str], str, list[str]]:
    """Return (labelled options, answer letter, option texts) with shuffled order."""
    texts = [correct] + list(distractors)
    order = rng.permutation(len(texts))
    shuffled = [texts[i] for i in order]
    return label_options(shuffled), LETTERS[shuffled.index(correct)], shuffled


def signed_angle(forward: np.ndarray, vec: np.ndarray) -> float:
    """Return the signed angle (degrees) from ``forward`` to ``vec`` in the xy plane;
    positive means counter-clockwise seen from above, i.e. to the left."""
    cross = forward[0] * vec[1] - forward[1] * vec[0]
    return math.degrees(math.atan2(cross, float(forward[0] * vec[0] + forward[1] * vec[1])))


def ccw_angle(forward: np.ndarray, vec: np.ndarray) -> float:
    """Return the counter-clockwise angle (degrees, [0, 360)) from ``forward`` to ``vec``
    in the xy plane: 0 ahead, 90 to the left, 270 to the right (the official generators'
    convention for relative direction)."""
    return signed_angle(forward, vec) % 360.0


def as_box(obj: SceneObject) -> SceneObject:
    """Return ``obj`` as its oriented bounding box (a cylinder becomes the square prism
    circumscribing it, as the official generators see every object)."""
    return obj if obj.shape == 'box' else dataclasses.replace(obj, shape='box')


def box_distance(a: SceneObject, b: SceneObject) -> float:
    """Return the closest-point distance (m) between two objects' oriented boxes.

    The official generators sample each box's surface on a 5 cm grid and take the
    closest pair of samples; this is the exact value that sampling approximates.
    """
    return object_distance(as_box(a), as_box(b))


def box_point_distance(point: Sequence[float], obj: SceneObject) -> float:
    """Return the distance (m) from a 3D point to the nearest point of the object's box."""
    return point_object_distance(point, as_box(obj))


class Context:
    """Shared state for the task generators of one scene and trajectory.

    ``vis`` marks objects covering at least the minimum fraction of a frame (what a
    question may ask about); ``present`` marks objects with any pixel in a frame (what
    the official generators' 2D boxes record, used to decide frame-level uniqueness).
    """

    def __init__(self, scene: Scene, trajectory: Trajectory, visibility: Visibility,
                 min_fraction: float, num_frames: int, rules: str = 'official') -> None:
        self.scene = scene
        self.traj = trajectory
        self.rules = rules
        self.vis = visibility.visible(min_fraction)
        self.present = visibility.pixels > 0
        self.seen = self.vis.any(axis=0)
        counts = scene.counts()
        # Categories whose every instance was seen: safe to ask about as a category.
        self.full_cats = sorted(c for c in counts
                                if all(self.seen[o.instance_id] for o in scene.instances(c)))
        self.unique = [scene.instances(c)[0] for c in self.full_cats if counts[c] == 1]
        self.sampled = sample_frame_indices(len(trajectory), num_frames)
        self.n_sampled = len(self.sampled)

    def frame_desc(self, k: int) -> str:
        """Return 'frame k of N' for the 0-based sampled frame k."""
        return f'frame {k + 1} of {self.n_sampled}'

    def cam_center(self, idx: int) -> np.ndarray:
        """Return the camera centre at trajectory index ``idx``."""
        return self.traj.poses[idx, :3, 3]

    def visible_unique(self, idx: int) -> list[SceneObject]:
        """Return unique-category objects visible at trajectory index ``idx``."""
        return [o for o in self.unique if self.vis[idx, o.instance_id]]

    def frame_unique(self, idx: int) -> list[SceneObject]:
        """Return objects visible at ``idx`` whose category has no other instance with
        any pixel in that frame (the official VSTI generators' frame-level uniqueness),
        in instance-id order."""
        present = self.present[idx]
        counts = Counter(o.category for o in self.scene.objects if present[o.instance_id])
        return [o for o in self.scene.objects
                if self.vis[idx, o.instance_id] and counts[o.category] == 1]

    def camera_extent(self, idx: int, obj: SceneObject, box: bool = False) -> np.ndarray:
        """Return the object's hull points (M, 3) in the camera frame at trajectory
        ``idx``: its oriented box's 8 corners when ``box``, else its exact hull points."""
        pose = self.traj.poses[idx]
        pts = obj.bounding_corners() if box else obj.corners()
        return (pts - pose[:3, 3]) @ pose[:3, :3]
