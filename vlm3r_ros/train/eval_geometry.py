"""``vlm3r-eval-geometry``: held-out depth, pose, keyframe-coverage and route metrics.

    vlm3r-eval-geometry --data data/geometry --split test [--weights X.safetensors]

Every test sequence (30 s, never used in training: disjoint seeds) streams through the
same :class:`~vlm3r_ros.models.cut3r.stream.Cut3rStream` the node runs (RGB only,
'stretch' to the model input, state carried over the whole sequence), and is scored:

* depth (each frame's own-view points): AbsRel and delta<1.25, metric (no per-frame
  scale alignment) and, for reference, with per-frame median scaling;
* pose: ATE, the RMSE of camera centres in the first camera's frame (metric, no
  alignment; the world frame of CUT3R is the first camera), and RPE between consecutive
  frames (translation m, rotation deg);
* keyframes: greedy max-coverage keyframes chosen from the predicted pointmaps
  (``CoverageIndex`` over the node's RGB-only keyframe voxels, ``RGB_KEYFRAME_VOXEL_M``)
  versus chosen from true depth + poses (0.1 m voxels), both measured against TRUE
  geometry in 0.1 m voxels: covered true voxels of the predicted choice / of the true one;
* routes: a ``TrajectoryGraph`` built from predicted poses (up = the first camera's up,
  as the node's 'auto'), and one from true poses; plan from the last frame to earlier
  frames; success = the path ends within 1 m (floor plane) of the goal frame's true
  position.

The model is scored three ways: with the node's default RGB-only poses (tracked from the
images, :class:`~vlm3r_ros.pipeline.tracked_stream.TrackedStream`, with the camera's
intrinsics as camera_info gives them), the same without camera_info (focal length
self-calibrated), and with CUT3R's own pose head and world pointmaps. Beside it, two
baselines: a constant-depth predictor (the training split's median depth; identity poses)
and the same architecture untrained (seeded random weights; tracked poses).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from vlm3r_ros.eval.render import scale_intrinsics
from vlm3r_ros.models.cut3r.checkpoint import load_cut3r
from vlm3r_ros.models.cut3r.config import Cut3rConfig
from vlm3r_ros.models.cut3r.model import Cut3rModel
from vlm3r_ros.models.cut3r.preprocess import output_size
from vlm3r_ros.models.cut3r.stream import Cut3rStream
from vlm3r_ros.pipeline.coverage import CoverageIndex
from vlm3r_ros.pipeline.engine import RGB_KEYFRAME_VOXEL_M
from vlm3r_ros.pipeline.engine_types import POSE_SOURCES
from vlm3r_ros.pipeline.rgb_odometry import rotation_angle_deg
from vlm3r_ros.pipeline.tracked_stream import TrackedStream
from vlm3r_ros.pipeline.voxels import points_from_depth, voxel_keys
from vlm3r_ros.planning.trajectory_graph import TrajectoryGraph, Unreachable
from vlm3r_ros.train.dataset import decode_depth, decode_rgb, iter_scene_frames, load_split
from vlm3r_ros.train.geometry_data import depth_to_points, resize_depth_nearest
from vlm3r_ros.weights import CUT3R_SMALL

VOXEL_M = 0.1
ROUTE_SUCCESS_M = 1.0


@dataclass
class Sequence3D:
    """One held-out sequence: RGB frames, true depth, intrinsics and poses."""

    seed: int
    images: list[np.ndarray]
    depths: list[np.ndarray]
    Ks: list[np.ndarray]
    poses: np.ndarray  # (N, 4, 4) camera-to-world


@dataclass
class Prediction:
    """Per-frame predictions of one method on one sequence (model input resolution)."""

    depth: np.ndarray  # (N, h, w) own-view z
    pts_world: np.ndarray  # (N, h, w, 3) in the first camera
    poses: np.ndarray  # (N, 4, 4) camera-to-first-camera


def load_sequences(root: str | Path, split: str, limit: int | None = None) -> list[Sequence3D]:
    """Return the sequences of ``split`` (at most ``limit``), frames in time order."""
    frames = load_split(root, split, 'frames')
    out = []
    for seed, rows in iter_scene_frames(frames):
        recs = [frames[int(r)] for r in rows]
        out.append(Sequence3D(
            seed, [decode_rgb(r['rgb']) for r in recs], [decode_depth(r['depth']) for r in recs],
            [np.asarray(r['K'], dtype=np.float64).reshape(3, 3) for r in recs],
            np.stack([np.asarray(r['pose'], dtype=np.float64).reshape(4, 4) for r in recs])))
        if limit and len(out) >= limit:
            break
    return out


def predict_model(model: Cut3rModel, seq: Sequence3D, pose_source: str = 'encoder',
                  camera_info: bool = True) -> Prediction:
    """Stream ``seq`` through the node's Cut3rStream (RGB only); return its predictions.

    ``pose_source`` 'encoder' keeps CUT3R's poses and world pointmaps; 'tracking' wraps the
    stream in the node's :class:`TrackedStream` (poses from image tracks and the encoder's
    depth), given the camera's intrinsics as the node gets them from camera_info, or with
    ``camera_info`` False self-calibrated from the images.
    """
    stream: Any = Cut3rStream(model, image_size=model.config.img_size, resize_mode='stretch')
    if pose_source == 'tracking':
        stream = TrackedStream(stream)
    elif pose_source != 'encoder':
        raise ValueError(f'pose_source must be one of {POSE_SOURCES}, got {pose_source!r}')
    depth, pts, poses = [], [], []
    for img, k in zip(seq.images, seq.Ks):
        geo = stream.step(img, k if pose_source == 'tracking' and camera_info else None)
        depth.append(geo.pts_self[..., 2])
        pts.append(geo.pts_world)
        poses.append(geo.pose)
    return Prediction(np.stack(depth), np.stack(pts), np.stack(poses))


def predict_constant(seq: Sequence3D, size: tuple[int, int], depth_m: float) -> Prediction:
    """Return the constant baseline: every pixel at ``depth_m``, every pose the first."""
    n = len(seq.images)
    K = _model_K(seq.Ks[0], seq.images[0].shape[:2], size)
    pts = depth_to_points(np.full(size, depth_m, dtype=np.float32), K)
    return Prediction(np.full((n,) + size, depth_m, dtype=np.float32),
                      np.broadcast_to(pts, (n,) + pts.shape).copy(), np.tile(np.eye(4), (n, 1, 1)))


def _model_K(K: np.ndarray, src_hw: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Return the intrinsics of the 'stretch'-resized model input."""
    return scale_intrinsics(K, size[1] / src_hw[1], size[0] / src_hw[0])


def true_geometry(seq: Sequence3D, size: tuple[int, int]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Return true depth at the model size (N, h, w) and true world points per frame."""
    depths, world = [], []
    for d, K, pose in zip(seq.depths, seq.Ks, seq.poses):
        dd = resize_depth_nearest(d, size)
        depths.append(dd)
        world.append(points_from_depth(dd, _model_K(K, d.shape, size), pose))
    return np.stack(depths), world


def depth_scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Return metric and median-scaled AbsRel / delta<1.25, averaged over frames."""
    out: dict[str, list[float]] = {'abs_rel': [], 'delta_1_25': [], 'abs_rel_med': [],
                                   'delta_1_25_med': []}
    for p, t in zip(pred, true):
        m = t > 0
        if not m.any():
            continue
        p, t = np.maximum(p[m].astype(np.float64), 1e-3), t[m].astype(np.float64)
        for suffix, q in (('', p), ('_med', p * np.median(t) / np.median(p))):
            out['abs_rel' + suffix].append(float(np.mean(np.abs(q - t) / t)))
            out['delta_1_25' + suffix].append(float(np.mean(np.maximum(q / t, t / q) < 1.25)))
    return {k: float(np.mean(v)) for k, v in out.items()}


def pose_scores(pred: np.ndarray, true_rel: np.ndarray) -> dict[str, float]:
    """Return ATE (m, no alignment) over the whole sequence and over its first 12 frames
    (the longest rollout seen in training), and consecutive-frame RPE (m, deg)."""
    err = np.sum((pred[:, :3, 3] - true_rel[:, :3, 3]) ** 2, axis=1)
    ate = float(np.sqrt(np.mean(err)))
    ate12 = float(np.sqrt(np.mean(err[:12])))
    rpe_t, rpe_r = [], []
    for i in range(len(pred) - 1):
        dp = np.linalg.inv(pred[i]) @ pred[i + 1]
        dt = np.linalg.inv(true_rel[i]) @ true_rel[i + 1]
        delta = np.linalg.inv(dt) @ dp
        rpe_t.append(float(np.linalg.norm(delta[:3, 3])))
        rpe_r.append(rotation_angle_deg(delta))
    return {'ate_m': ate, 'ate_first12_m': ate12, 'rpe_m': float(np.mean(rpe_t)),
            'rpe_deg': float(np.mean(rpe_r))}


def select_keyframes(keys_per_frame: Sequence[np.ndarray], budget: int) -> list[int]:
    """Return the node's greedy max-coverage keyframes for per-frame voxel keys."""
    index = CoverageIndex()
    for i, keys in enumerate(keys_per_frame):
        index.add(i, i, keys)
    return list(index.select(budget=budget, ratio=None).frame_ids)


def covered(true_keys: Sequence[np.ndarray], frames: Sequence[int]) -> int:
    """Return how many true voxels the frames cover."""
    if not frames:
        return 0
    return int(np.unique(np.concatenate([true_keys[f] for f in frames])).size)


def route_successes(poses_rel: np.ndarray, first_pose: np.ndarray, true_world: np.ndarray,
                    up: tuple[float, float, float], goals: Sequence[int]) -> list[bool]:
    """Plan from the last frame to each goal frame on a graph of ``poses_rel``.

    ``poses_rel`` are camera-to-reference poses; ``first_pose`` maps the reference frame to
    the world. Success: the path's end, in the true world, lies within 1 m of the goal
    frame's true camera centre on the floor plane.
    """
    graph = TrajectoryGraph(node_spacing_m=0.25, link_radius_m=0.6, up_axis=up)
    for i, pose in enumerate(poses_rel):
        graph.add_pose(i, i, pose)
    out = []
    for g in goals:
        try:
            path = graph.plan(poses_rel[-1][:3, 3], goal_frame_id=int(g))
        except Unreachable:
            out.append(False)
            continue
        end = first_pose[:3, :3] @ path.positions[-1] + first_pose[:3, 3]
        out.append(bool(np.hypot(*(end[:2] - true_world[g][:2, 3])) <= ROUTE_SUCCESS_M))
    return out


@dataclass
class Truth:
    """What every method is scored against on one sequence (computed once)."""

    depth: np.ndarray
    keys: list[np.ndarray]
    reference_cover: int
    uniform_cover: int
    poses_rel: np.ndarray
    goals: list[int]
    routes_true: list[bool]


def prepare_truth(seq: Sequence3D, size: tuple[int, int], budget: int,
                  routes_per_seq: int) -> Truth:
    """Return the true geometry, reference keyframe coverage and route goals of ``seq``."""
    true_depth, true_world = true_geometry(seq, size)
    keys = [voxel_keys(p, VOXEL_M) for p in true_world]
    uniform = list(np.linspace(0, len(seq.images) - 1, budget).round().astype(int))
    rng = np.random.default_rng(seq.seed)
    goals = sorted(rng.choice(int(0.8 * len(seq.images)), size=routes_per_seq,
                              replace=False).tolist())
    return Truth(true_depth, keys, covered(keys, select_keyframes(keys, budget)),
                 covered(keys, uniform), np.linalg.inv(seq.poses[0]) @ seq.poses, goals,
                 route_successes(seq.poses, np.eye(4), seq.poses, (0.0, 0.0, 1.0), goals))


def evaluate_method(name: str, predict: Callable[[Sequence3D], Prediction],
                    seqs: Sequence[Sequence3D], truths: Sequence[Truth],
                    budget: int, keyframe_voxel_m: float = RGB_KEYFRAME_VOXEL_M) -> dict[str, Any]:
    """Return one method's scores over ``seqs`` (means over sequences); keyframes are
    chosen on its world pointmaps in ``keyframe_voxel_m`` voxels (the node's setting)."""
    rows = []
    for seq, truth in zip(seqs, truths):
        pred = predict(seq)
        pred_keys = [voxel_keys(p.reshape(-1, 3), keyframe_voxel_m) for p in pred.pts_world]
        mine = covered(truth.keys, select_keyframes(pred_keys, budget))
        routes = route_successes(pred.poses, seq.poses[0], seq.poses, (0.0, -1.0, 0.0),
                                 truth.goals)
        ref = max(truth.reference_cover, 1)
        rows.append({**depth_scores(pred.depth, truth.depth),
                     **pose_scores(pred.poses, truth.poses_rel),
                     'coverage_vs_true': mine / ref,
                     'uniform_coverage_vs_true': truth.uniform_cover / ref,
                     'route_success': float(np.mean(routes)),
                     'route_success_true_poses': float(np.mean(truth.routes_true))})
    summary = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    return {'method': name, 'sequences': len(rows), **summary}


def train_median_depth(root: str | Path, max_frames: int = 400) -> float:
    """Return the median true depth over (a sample of) the training split."""
    frames = load_split(root, 'train', 'frames')
    idx = np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int)
    vals = [decode_depth(frames[int(i)]['depth']) for i in idx]
    return float(np.median(np.concatenate([v[v > 0] for v in vals])))


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    """Return the results as a Markdown table."""
    cols = [('method', 'method', '{}'), ('abs_rel', 'AbsRel', '{:.3f}'),
            ('delta_1_25', 'δ<1.25', '{:.3f}'), ('abs_rel_med', 'AbsRel (med)', '{:.3f}'),
            ('delta_1_25_med', 'δ<1.25 (med)', '{:.3f}'), ('ate_m', 'ATE m', '{:.3f}'),
            ('ate_first12_m', 'ATE first 12 frames m', '{:.3f}'),
            ('rpe_m', 'RPE m', '{:.3f}'), ('rpe_deg', 'RPE °', '{:.2f}'),
            ('coverage_vs_true', 'coverage vs true-depth keyframes', '{:.3f}'),
            ('uniform_coverage_vs_true', 'uniform keyframes, same', '{:.3f}'),
            ('route_success', 'route ≤1 m', '{:.3f}'),
            ('route_success_true_poses', 'route ≤1 m, true poses', '{:.3f}')]
    lines = ['| ' + ' | '.join(c[1] for c in cols) + ' |',
             '|' + '|'.join('---' if c[0] == 'method' else '---:' for c in cols) + '|']
    for r in results:
        lines.append('| ' + ' | '.join(fmt.format(r[key]) for key, _, fmt in cols) + ' |')
    return '\n'.join(lines)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``vlm3r-eval-geometry``."""
    p = argparse.ArgumentParser(prog='vlm3r-eval-geometry', description=__doc__.splitlines()[0])
    p.add_argument('--data', type=Path, default=Path('data/geometry'), help='dataset folder')
    p.add_argument('--split', default='test', choices=('val', 'test'), help='held-out split')
    p.add_argument('--weights', type=Path, default=CUT3R_SMALL,
                   help='CUT3R checkpoint (default: the shipped small CUT3R)')
    p.add_argument('--limit', type=int, default=0, help='evaluate only the first N sequences')
    p.add_argument('--budget', type=int, default=8, help='keyframe budget (default 8)')
    p.add_argument('--routes', type=int, default=10, help='route goals per sequence')
    p.add_argument('--poses', default='tracking,tracking-no-camera-info,encoder',
                   help='pose sources to score the model with (comma-separated)')
    p.add_argument('--no-baselines', action='store_true', help='skip the two baselines')
    p.add_argument('--threads', type=int, default=0, help='torch threads (0: default)')
    p.add_argument('--json', type=Path, default=None, help='also write the results here')
    return p


def main(argv: list[str] | None = None) -> int:
    """Evaluate and print the table; return 0."""
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.monotonic()
    model = load_cut3r(args.weights)
    size = output_size((1, 1), model.config.img_size, 'stretch')
    seqs = load_sequences(args.data, args.split, args.limit or None)
    truths = [prepare_truth(s, size, args.budget, args.routes) for s in seqs]
    name = args.weights.name
    rows = {'tracking': (f'trained ({name}), tracked poses (node default, camera_info)',
                         lambda s: predict_model(model, s, 'tracking')),
            'tracking-no-camera-info': (f'trained ({name}), tracked poses, no camera_info',
                                        lambda s: predict_model(model, s, 'tracking',
                                                                camera_info=False)),
            'encoder': (f'trained ({name}), encoder poses',
                        lambda s: predict_model(model, s, 'encoder'))}
    chosen = [r for r in args.poses.split(',') if r]
    unknown = sorted(set(chosen) - set(rows))
    if unknown:
        raise SystemExit(f'--poses: unknown {unknown}; choose from {sorted(rows)}')
    results = [evaluate_method(*rows[r], seqs, truths, args.budget) for r in chosen]
    if not args.no_baselines:
        torch.manual_seed(0)
        untrained = Cut3rModel(Cut3rConfig.from_official_string(
            model.config.to_official_string())).eval()
        results.append(evaluate_method('untrained (same architecture), tracked poses',
                                       lambda s: predict_model(untrained, s, 'tracking'), seqs,
                                       truths, args.budget))
        depth = train_median_depth(args.data)
        results.append(evaluate_method(f'constant depth {depth:.2f} m, identity pose',
                                       lambda s: predict_constant(s, size, depth), seqs,
                                       truths, args.budget))
    frames = sum(len(s.images) for s in seqs)
    meta = {'split': args.split, 'sequences': len(seqs), 'frames': frames,
            'seconds_per_sequence': round(frames / max(len(seqs), 1) / 5.0, 1),
            'keyframe_budget': args.budget, 'voxel_m': VOXEL_M, 'route_success_m': ROUTE_SUCCESS_M,
            'minutes': round((time.monotonic() - started) / 60.0, 2)}
    print(markdown_table(results))
    print(json.dumps(meta))
    if args.json:
        args.json.write_text(json.dumps({'meta': meta, 'results': results}, indent=1),
                             encoding='utf8')
    return 0


if __name__ == '__main__':
    sys.exit(main())
