"""Are the small CUT3R's poses better read from its pose head or from its two pointmaps?

    python -m benchmarks.pose_source_rgb --data data/geometry_eval --split val

CUT3R predicts, per frame, points in its own camera (``pts_self``) and in the world
(``pts_world``), and a camera pose from its pose head. The pose that maps the first
pointmap onto the second (confidence-weighted Kabsch/Umeyama, rigid) is a second pose
estimate, the way DUSt3R-style models read poses. This streams each sequence once, RGB
only, and scores both against the true trajectory: ATE (m, no alignment, first camera's
frame), consecutive-frame RPE (m, deg), and route success as ``vlm3r-eval-geometry``
computes it. Settings are chosen on val; test is for reporting.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from vlm3r_ros.models.cut3r.checkpoint import load_cut3r
from vlm3r_ros.models.cut3r.stream import Cut3rStream
from vlm3r_ros.train.eval_geometry import (load_sequences, pose_scores, prepare_truth,
                                           route_successes)
from vlm3r_ros.weights import CUT3R_SMALL


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


def main(argv: list[str] | None = None) -> int:
    """Print and write each pose source's mean scores over the split's sequences."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data', default='data/geometry_eval')
    p.add_argument('--split', default='val', choices=('val', 'test'))
    p.add_argument('--limit', type=int, default=None)
    p.add_argument('--weights', default=str(CUT3R_SMALL), help='CUT3R weights to measure')
    p.add_argument('--out', default='out/pose_source_rgb.json')
    args = p.parse_args(argv)
    model = load_cut3r(args.weights)
    size = tuple(model.config.img_size)
    rows: dict[str, list[dict[str, float]]] = {}
    started = time.monotonic()
    for seq in load_sequences(args.data, args.split, args.limit):
        truth = prepare_truth(seq, size, 8, 10)
        stream = Cut3rStream(model, image_size=size, resize_mode='stretch')
        head, fitted = [], []
        for img in seq.images:
            geo = stream.step(img)
            head.append(geo.pose)
            conf = np.minimum(geo.conf, geo.conf_self).reshape(-1).astype(np.float64)
            fitted.append(rigid_fit(geo.pts_self.reshape(-1, 3).astype(np.float64),
                                    geo.pts_world.reshape(-1, 3).astype(np.float64), conf))
        for name, poses in (('pose head', np.stack(head)), ('pointmap fit', np.stack(fitted))):
            scores = pose_scores(poses, truth.poses_rel)
            routes = route_successes(poses, seq.poses[0], seq.poses, (0.0, -1.0, 0.0),
                                     truth.goals)
            rows.setdefault(name, []).append({**scores, 'route_success': float(np.mean(routes))})
    summary = {name: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]}
               for name, rs in rows.items()}
    for name, s in summary.items():
        print(f'{name:14s} ' + '  '.join(f'{k} {v:.3f}' for k, v in s.items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({'split': args.split, 'seconds': time.monotonic() - started,
                               'results': summary}, indent=2))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
