"""Scene memory: how long ``save_scene`` / ``load_scene`` take and how big the file is.

    python -m benchmarks.scene_save_load [--frames 256] [--width 640 --height 480]

Fills an engine (tiny profile, the shipped weights, RGB only, streaming tokens, the
reconstruction on) with rendered frames of a synthetic room at the camera size given,
then saves the scene, loads it into a fresh engine twice (same model: results reused;
another model identity: recomputed, timed until the geometry caught up) and checks that
the reloaded engine selects the same keyframes. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from vlm3r_ros.eval.render import intrinsics, render
from vlm3r_ros.eval.scenes import make_scene, make_trajectory
from vlm3r_ros.models.loader import ModelSpec, load_bundle
from vlm3r_ros.pipeline.engine import EngineConfig, SpatialEngine


def _engine(bundle: object) -> SpatialEngine:
    engine = SpatialEngine(EngineConfig(geometry_rate_hz=0, reconstruction=True,
                                        max_frames=100000, max_span_s=1e6),
                           lambda: bundle)
    engine.load_models(blocking=True)
    engine.start()
    return engine


def _wait(engine: SpatialEngine, target: int, timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    while engine.status().geometry_frames < target and time.monotonic() < deadline:
        time.sleep(0.005)


def main(argv: list[str] | None = None) -> int:
    """Run the measurement; print the JSON result."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--frames', type=int, default=256)
    p.add_argument('--width', type=int, default=640)
    p.add_argument('--height', type=int, default=480)
    args = p.parse_args(argv)
    bundle = load_bundle(ModelSpec(profile='tiny'))
    scene = make_scene(3)
    traj = make_trajectory(scene, seconds=args.frames / 5.0, rate_hz=5, seed=3)
    K = intrinsics(args.width, args.height)
    images = [render(scene, pose, K, args.width, args.height)[0]
              for pose in traj.poses[:args.frames]]
    source = _engine(bundle)
    for i, rgb in enumerate(images):
        source.submit_frame(1_000_000_000 + i * 200_000_000, rgb)
        _wait(source, i + 1)
    keyframes = source.select_keyframes(8).frame_ids
    first_id = source.buffer.snapshot()[0].frame_id
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / 'scene.safetensors')
        t0 = time.monotonic()
        saved = source.save_scene(path)
        save_s = time.monotonic() - t0
        source.stop()
        same = _engine(bundle)
        t0 = time.monotonic()
        loaded = same.load_scene(path)
        load_s = time.monotonic() - t0
        offset = same.buffer.snapshot()[0].frame_id - first_id  # a restore renumbers
        same_keyframes = [f - offset for f in same.select_keyframes(8).frame_ids] == keyframes
        same.stop()
        other = _engine(dataclasses.replace(bundle, identity={'profile': 'another'}))
        t0 = time.monotonic()
        other.load_scene(path)
        _wait(other, len(images))
        recompute_s = time.monotonic() - t0
        other.stop()
    print(json.dumps({'frames': len(images), 'size': f'{args.width}x{args.height}',
                      'file_mb': round(saved.nbytes / 1e6, 1), 'save_s': round(save_s, 2),
                      'load_reused_s': round(load_s, 2), 'reused': loaded.reused,
                      'same_keyframes': same_keyframes,
                      'load_recomputed_s': round(recompute_s, 2)}))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
