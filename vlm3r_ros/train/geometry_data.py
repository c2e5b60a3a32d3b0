"""View sequences for geometry training, read from ``vlm3r-dataset`` shards.

One sample is ``views`` frames of one scene, taken in time order with a random start
and a random frame stride (so that camera speeds vary), preprocessed exactly as the
node preprocesses camera frames (:func:`~vlm3r_ros.models.cut3r.preprocess.preprocess_image`,
'stretch' to the model input), with one colour jitter for the whole sequence (as CUT3R
augments). Targets follow CUT3R's training data: metric points in each view's own
camera and in the first view's camera, a validity mask, and each camera's pose in the
first view's camera as ``[t, q(w, x, y, z)]``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transforms3d

from vlm3r_ros.models.cut3r.preprocess import preprocess_image
from vlm3r_ros.train.dataset import decode_depth, decode_rgb, iter_scene_frames, load_split


def matrix_to_pose_encoding(pose: np.ndarray) -> np.ndarray:
    """Return ``[tx, ty, tz, qw, qx, qy, qz]`` (real part >= 0) of a 4x4 rigid transform.

    The inverse of :func:`~vlm3r_ros.models.cut3r.preprocess.pose_encoding_to_matrix`,
    with the sign convention of CUT3R's pose head.
    """
    q = transforms3d.quaternions.mat2quat(np.asarray(pose[:3, :3], dtype=np.float64))
    if q[0] < 0:
        q = -q
    return np.concatenate([pose[:3, 3], q]).astype(np.float32)


def depth_to_points(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Return (H, W, 3) camera-frame points for z-depth ``depth`` and intrinsics ``K``."""
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    x = (u - K[0, 2]) / K[0, 0] * depth
    y = (v - K[1, 2]) / K[1, 1] * depth
    return np.stack([x, y, depth], axis=-1).astype(np.float32)


def resize_depth_nearest(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a depth map to ``(h, w)`` by nearest neighbour at pixel centres (no mixing
    of foreground and background depths across edges)."""
    h, w = size
    src_h, src_w = depth.shape
    ys = np.minimum(((np.arange(h) + 0.5) * src_h / h).astype(np.int64), src_h - 1)
    xs = np.minimum(((np.arange(w) + 0.5) * src_w / w).astype(np.int64), src_w - 1)
    return depth[ys][:, xs]


def colour_jitter(images: list[np.ndarray], rng: np.random.Generator, strength: float
                  ) -> list[np.ndarray]:
    """Return ``images`` with one random brightness/contrast/saturation/tint applied to all."""
    if strength <= 0:
        return images
    gain = 1.0 + rng.uniform(-0.3, 0.3) * strength
    contrast = 1.0 + rng.uniform(-0.3, 0.3) * strength
    saturation = 1.0 + rng.uniform(-0.4, 0.4) * strength
    tint = 1.0 + rng.uniform(-0.06, 0.06, 3) * strength
    out = []
    for img in images:
        f = img.astype(np.float32)
        grey = f.mean(axis=-1, keepdims=True)
        f = grey + (f - grey) * saturation
        f = (f - f.mean()) * contrast + f.mean()
        out.append(np.clip(f * gain * tint, 0, 255).astype(np.uint8))
    return out


@dataclass
class SceneIndex:
    """Row numbers of one scene's frames, in time order."""

    seed: int
    rows: np.ndarray


class GeometrySequences(torch.utils.data.Dataset):
    """Sequences of ``views`` frames from one split of a geometry dataset.

    Item ``i`` is drawn from scene ``i % num_scenes`` with a generator seeded by
    ``(seed, epoch, i)``, so a run is reproducible and each epoch sees new windows.
    """

    def __init__(self, root: str | Path, split: str, views: int, image_size: tuple[int, int],
                 max_stride: int = 3, jitter: float = 1.0, seed: int = 0,
                 length: int | None = None) -> None:
        """Index the split's scenes.

        Raises:
            FileNotFoundError: when the split has no shards.
            ValueError: when no scene has ``views`` frames.
        """
        self.frames = load_split(root, split, 'frames')
        self.scenes = [SceneIndex(seed, rows) for seed, rows in iter_scene_frames(self.frames)
                       if len(rows) >= views]
        if not self.scenes:
            raise ValueError(f'no scene in {split!r} has {views} frames')
        self.views = int(views)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.max_stride = int(max_stride)
        self.jitter = float(jitter)
        self.seed = int(seed)
        self.epoch = 0
        self.length = int(length) if length else len(self.scenes)

    def __len__(self) -> int:
        """Return the number of items per epoch."""
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Draw new windows from the next epoch on."""
        self.epoch = int(epoch)

    def window(self, index: int, rng: np.random.Generator) -> tuple[SceneIndex, np.ndarray]:
        """Return the scene and the frame rows of item ``index``."""
        scene = self.scenes[index % len(self.scenes)]
        n = len(scene.rows)
        stride = int(rng.integers(1, max(1, min(self.max_stride, (n - 1) // max(1, self.views - 1))) + 1))
        span = (self.views - 1) * stride + 1
        start = int(rng.integers(0, n - span + 1))
        return scene, scene.rows[start:start + span:stride]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Return the tensors of one sequence (see :func:`sequence_tensors`)."""
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        _, rows = self.window(int(index), rng)
        records = [self.frames[int(r)] for r in rows]
        images = colour_jitter([decode_rgb(r['rgb']) for r in records], rng, self.jitter)
        depths = [decode_depth(r['depth']) for r in records]
        Ks = [np.asarray(r['K'], dtype=np.float64).reshape(3, 3) for r in records]
        poses = [np.asarray(r['pose'], dtype=np.float64).reshape(4, 4) for r in records]
        return sequence_tensors(images, depths, Ks, poses, self.image_size)


def sequence_tensors(images: list[np.ndarray], depths: list[np.ndarray], Ks: list[np.ndarray],
                     poses: list[np.ndarray], image_size: tuple[int, int]
                     ) -> dict[str, torch.Tensor]:
    """Return the model inputs and CUT3R targets of one sequence.

    Keys (V views, model input h x w): ``img`` (V, 3, h, w) in [-1, 1]; ``pts_self`` and
    ``pts_world`` (V, h, w, 3) metres, in the own and in the first camera; ``valid``
    (V, h, w) bool; ``pose`` (V, 7) camera-to-first-camera ``[t, q]``; ``K`` (V, 3, 3)
    model-input intrinsics; ``cam_to_first`` (V, 4, 4).
    """
    first_inv = np.linalg.inv(poses[0])
    out: dict[str, list[np.ndarray]] = {k: [] for k in
                                        ('img', 'pts_self', 'pts_world', 'valid', 'pose', 'K',
                                         'cam_to_first')}
    for img, depth, K, pose in zip(images, depths, Ks, poses):
        arr, transform = preprocess_image(img, image_size, 'stretch')
        k = transform.apply_to_intrinsics(K)
        d = resize_depth_nearest(depth, transform.out_size)
        pts = depth_to_points(d, k)
        rel = first_inv @ pose
        out['img'].append(arr[0])
        out['pts_self'].append(pts)
        out['pts_world'].append((pts @ rel[:3, :3].T.astype(np.float32)
                                 + rel[:3, 3].astype(np.float32)))
        out['valid'].append(d > 0)
        out['pose'].append(matrix_to_pose_encoding(rel))
        out['K'].append(k.astype(np.float32))
        out['cam_to_first'].append(rel.astype(np.float32))
    return {k: torch.from_numpy(np.stack(v)) for k, v in out.items()}


def collate(batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack samples into (B, V, ...) tensors."""
    return {k: torch.stack([b[k] for b in batch]) for k in batch[0]}


def describe(ds: GeometrySequences) -> dict[str, Any]:
    """Return a JSON-ready summary of a sequence dataset."""
    return {'scenes': len(ds.scenes), 'frames': len(ds.frames), 'views': ds.views,
            'image_size': list(ds.image_size), 'items_per_epoch': len(ds)}
