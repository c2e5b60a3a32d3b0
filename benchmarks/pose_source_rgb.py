"""Where should the node's RGB-only poses come from: CUT3R's pose head or image tracks?

    python -m benchmarks.pose_source_rgb --data data/geometry --split val

Each sequence of the split streams once through the small CUT3R (RGB only, as the node
runs it), and every pose source is scored against the true trajectory: ATE (m, no
alignment, first camera's frame), consecutive-frame RPE (m, deg), route success and
keyframe coverage as ``vlm3r-eval-geometry`` computes them (coverage at several
selection voxel sizes). Sources:

* ``pose head``: the encoder's own poses and world pointmaps (CUT3R as released);
* ``pointmap fit``: the rigid transform from its own-view to its world pointmap
  (confidence-weighted Umeyama), the way DUSt3R-style models read poses;
* ``tracking``: the node's :class:`~vlm3r_ros.pipeline.tracked_stream.TrackedStream`
  (rotation from image tracks, translation from tracks + the encoder's depth, both
  refined together) with the camera's intrinsics (camera_info), ``tracking, rotation
  only``, ``tracking, no camera_info`` (intrinsics self-calibrated from the tracks) and,
  with ``--only``, earlier settings (bearing-only rotation, residual gates);
* ``still camera``: every pose the first (what a source that learnt nothing scores).

Settings are chosen on val; test is for reporting.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from vlm3r_ros.models.cut3r.checkpoint import load_cut3r
from vlm3r_ros.models.cut3r.stream import Cut3rStream
from vlm3r_ros.pipeline.rgb_odometry import OdometryConfig
from vlm3r_ros.pipeline.tracked_stream import TrackedStream
from vlm3r_ros.pipeline.voxels import voxel_keys
from vlm3r_ros.train.eval_geometry import (covered, load_sequences, pose_scores, prepare_truth,
                                           route_successes, select_keyframes)
from vlm3r_ros.weights import CUT3R_SMALL

VOXELS = (0.1, 0.25, 0.5)


def rigid_fit(src: np.ndarray, dst: np.ndarray, weights: np.ndarray,
              with_scale: bool = False) -> np.ndarray:
    """Return the 4x4 transform T minimising sum w |T src - dst|^2 (Umeyama; rigid unless
    ``with_scale``, then the scale multiplies the rotation)."""
    w = weights / max(weights.sum(), 1e-12)
    mu_s, mu_d = w @ src, w @ dst
    a, b = src - mu_s, dst - mu_d
    cov = (b * w[:, None]).T @ a
    u, sig, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, 1.0, d])
    rot = u @ fix @ vt
    scale = 1.0
    if with_scale:
        var = float(w @ np.sum(a * a, axis=1))
        scale = float(np.sum(sig * np.diag(fix)) / max(var, 1e-12))
    out = np.eye(4)
    out[:3, :3] = scale * rot
    out[:3, 3] = mu_d - scale * rot @ mu_s
    return out


class Replay:
    """The encoder outputs of one streamed sequence, given again frame by frame: every
    tracking variant wraps the same (deterministic) CUT3R pass instead of its own."""

    def __init__(self, geos: list) -> None:
        self.geos, self.frame_index = geos, 0

    def step(self, image: np.ndarray, intrinsics=None, cam_to_world=None, update=True):
        """Return the next frame's stored geometry (the arguments are the stream's)."""
        self.frame_index += 1
        return self.geos[self.frame_index - 1]


def place(pts_self: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Return (N, 3) own-view points placed in the world with ``pose``."""
    pts = pts_self.reshape(-1, 3).astype(np.float64)
    return pts @ pose[:3, :3].T + pose[:3, 3]


def main(argv: list[str] | None = None) -> int:
    """Print and write each pose source's mean scores over the split's sequences."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data', default='data/geometry')
    p.add_argument('--split', default='val', choices=('val', 'test'))
    p.add_argument('--limit', type=int, default=None)
    p.add_argument('--budget', type=int, default=8, help='keyframe budget')
    p.add_argument('--weights', default=str(CUT3R_SMALL), help='CUT3R weights to measure')
    p.add_argument('--only', default='', help="';'-separated tracking variants to run "
                   '(default: every source but the earlier and turn-gate settings)')
    p.add_argument('--out', default='out/pose_source_rgb.json')
    p.add_argument('--threads', type=int, default=1, help='torch threads')
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_cut3r(args.weights)
    size = tuple(model.config.img_size)
    rows: dict[str, list[dict[str, float]]] = {}
    started = time.monotonic()
    for seq in load_sequences(args.data, args.split, args.limit):
        truth = prepare_truth(seq, size, args.budget, 10)
        stream = Cut3rStream(model, image_size=size, resize_mode='stretch')
        geos = [stream.step(img) for img in seq.images]
        fitted = [rigid_fit(g.pts_self.reshape(-1, 3).astype(np.float64),
                            g.pts_world.reshape(-1, 3).astype(np.float64),
                            np.minimum(g.conf, g.conf_self).reshape(-1).astype(np.float64))
                  for g in geos]
        sources = {'pose head': ([g.pose for g in geos], [g.pts_world for g in geos]),
                   'pointmap fit': (fitted, [g.pts_world for g in geos]),
                   'still camera': ([np.eye(4)] * len(geos),
                                    [place(g.pts_self, np.eye(4)) for g in geos])}
        for name, cfg, with_k, default in (
                ('tracking', OdometryConfig(), True, True),
                ('tracking, rotation only', OdometryConfig(translation=False), True, True),
                ('tracking, no camera_info', OdometryConfig(), False, True),
                ('tracking, bearing-only rotation (before 2026-12-07 evening)',
                 OdometryConfig(refine_rotation_iterations=0, max_residual_deg=10.0), True,
                 False),
                ('tracking, bearing-only rotation, residual 3 deg',
                 OdometryConfig(refine_rotation_iterations=0), True, False),
                ('tracking, refined, residual 10 deg',
                 OdometryConfig(max_residual_deg=10.0), True, False),
                ('tracking, turn gate 0.3 deg',
                 OdometryConfig(turn_only_residual_deg=0.3), True, False),
                ('tracking, turn gate 0.15 deg',
                 OdometryConfig(turn_only_residual_deg=0.15), True, False)):
            if (args.only and name not in args.only.split(';')) or (not args.only
                                                                     and not default):
                continue
            tracked = TrackedStream(Replay(geos), cfg)
            out = [tracked.step(img, k if with_k else None) for img, k in zip(seq.images, seq.Ks)]
            sources[name] = ([g.pose for g in out], [g.pts_world for g in out])
        for name, (poses, world) in sources.items():
            poses = np.stack(poses)
            scores = pose_scores(poses, truth.poses_rel)
            routes = route_successes(poses, seq.poses[0], seq.poses, (0.0, -1.0, 0.0),
                                     truth.goals)
            # Every third frame of the first 80 % as a goal too: 10 goals per sequence
            # (the evaluation's) are too few to rank settings that differ by a few points.
            dense = route_successes(poses, seq.poses[0], seq.poses, (0.0, -1.0, 0.0),
                                    list(range(0, int(0.8 * len(poses)), 3)))
            row = {**scores, 'route_success': float(np.mean(routes)),
                   'route_success_dense': float(np.mean(dense))}
            for vox in VOXELS:
                keys = [voxel_keys(np.asarray(w).reshape(-1, 3), vox) for w in world]
                row[f'coverage_{vox}'] = covered(truth.keys, select_keyframes(
                    keys, args.budget)) / max(truth.reference_cover, 1)
            row['uniform_coverage'] = truth.uniform_cover / max(truth.reference_cover, 1)
            rows.setdefault(name, []).append(row)
        print(f'sequence {seq.seed}: {time.monotonic() - started:.0f} s', flush=True)
    summary = {name: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]}
               for name, rs in rows.items()}
    for name, s in summary.items():
        print(f'{name:24s} ' + '  '.join(f'{k} {v:.3f}' for k, v in s.items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({'split': args.split, 'weights': str(args.weights),
                               'sequences': len(next(iter(rows.values()))),
                               'seconds': time.monotonic() - started,
                               'results': summary}, indent=2))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
