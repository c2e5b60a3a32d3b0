"""Which keyframe selection works best on *predicted* (RGB-only) geometry?

    python -m benchmarks.keyframe_selection_rgb --data data/geometry --split val

Streams each sequence of a split once through the shipped small CUT3R (as the node does:
RGB only, state carried), then scores several ways of choosing ``budget`` keyframes from
its pointmaps, all against TRUE geometry as ``vlm3r-eval-geometry`` does: covered true voxels
of the choice / covered true voxels of the greedy choice made on true depth + poses.
Variants: the node's greedy max coverage at several voxel sizes, with low-confidence
points dropped (per-frame confidence quantile); for reference uniform sampling and the
greedy choice on true geometry at the coarser voxel sizes.
Selection settings are chosen on the val split; the test split is only for reporting.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from vlm3r_ros.models.cut3r.checkpoint import load_cut3r
from vlm3r_ros.models.cut3r.stream import Cut3rStream
from vlm3r_ros.pipeline.voxels import voxel_keys
from vlm3r_ros.train.eval_geometry import (VOXEL_M, covered, load_sequences, select_keyframes,
                                           true_geometry)
from vlm3r_ros.weights import CUT3R_SMALL

VOXELS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
CONF_QUANTILES = (0.0, 0.25)


def main(argv: list[str] | None = None) -> int:
    """Print and write the coverage ratio of every variant (means over sequences)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data', default='data/geometry')
    p.add_argument('--split', default='val', choices=('val', 'test'))
    p.add_argument('--budget', type=int, default=8)
    p.add_argument('--limit', type=int, default=None)
    p.add_argument('--weights', default=str(CUT3R_SMALL), help='CUT3R weights to measure')
    p.add_argument('--out', default='out/keyframe_selection_rgb.json')
    args = p.parse_args(argv)
    model = load_cut3r(args.weights)
    size = tuple(model.config.img_size)
    seqs = load_sequences(args.data, args.split, args.limit)
    scores: dict[str, list[float]] = {}
    started = time.monotonic()
    for seq in seqs:
        _, true_world = true_geometry(seq, size)
        truth = [voxel_keys(w, VOXEL_M) for w in true_world]
        ref = max(covered(truth, select_keyframes(truth, args.budget)), 1)
        stream = Cut3rStream(model, image_size=size, resize_mode='stretch')
        pts, conf = [], []
        for img in seq.images:
            geo = stream.step(img)
            pts.append(geo.pts_world.reshape(-1, 3))
            conf.append(geo.conf.reshape(-1))
        n = len(seq.images)
        uniform = list(np.linspace(0, n - 1, args.budget).round().astype(int))
        scores.setdefault('uniform', []).append(covered(truth, uniform) / ref)
        for voxel in VOXELS[1:]:  # the same coarser voxels on TRUE geometry, for reference
            keys = [voxel_keys(w, voxel) for w in true_world]
            scores.setdefault(f'true depth + poses, voxel {voxel:g} m', []).append(
                covered(truth, select_keyframes(keys, args.budget)) / ref)
        for q in CONF_QUANTILES:
            kept = [pt[c >= np.quantile(c, q)] if q > 0 else pt for pt, c in zip(pts, conf)]
            for voxel in VOXELS:
                keys = [voxel_keys(k, voxel) for k in kept]
                picks = select_keyframes(keys, args.budget)
                scores.setdefault(f'coverage voxel {voxel:g} m, conf q{q:g}', []).append(
                    covered(truth, picks) / ref)
    summary = {k: {'mean': float(np.mean(v)), 'min': float(np.min(v))}
               for k, v in scores.items()}
    for name, s in sorted(summary.items(), key=lambda kv: -kv[1]['mean']):
        print(f'{s["mean"]:.3f} (min {s["min"]:.3f})  {name}')
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({'split': args.split, 'sequences': len(seqs),
                               'budget': args.budget, 'seconds': time.monotonic() - started,
                               'results': summary}, indent=2))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
