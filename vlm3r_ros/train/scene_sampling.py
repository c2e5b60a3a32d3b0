"""Varied synthetic sequences for training: rooms, lighting, cameras and paths per seed.

The evaluation generator (:func:`vlm3r_ros.eval.scenes.make_scene`) draws rooms from a
narrow family (5-7.5 m, one light, one floor, a camera 1.0-1.5 m high driving at
0.5 m/s). A model trained on that family would learn its look, not geometry, so the
training sampler widens every axis the renderer supports: room size and height, object
count, wall and floor colours, light direction and strength, camera height, pitch,
field of view, speed and turn rate (turning on the spot and revisits come from the
trajectory generator itself). Rooms stay rectangular: the ray caster has no other shape.

Everything is a pure function of the seed.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlm3r_ros.eval.render import intrinsics
from vlm3r_ros.eval.scenes import OPTIONAL_CATEGORIES, Scene, Trajectory, make_scene, make_trajectory

_FLOORS: tuple[tuple[int, int, int], ...] = (
    (168, 124, 84), (120, 84, 56), (196, 170, 130), (150, 150, 146), (90, 90, 96),
    (184, 160, 120), (110, 120, 100))


@dataclass(frozen=True)
class SequenceSpec:
    """One sampled sequence: the scene, its camera path and the camera model.

    Attributes:
        seed: the seed everything was drawn from.
        scene: the furnished room (with its lighting).
        trajectory: camera-to-world poses at ``rate_hz``.
        K: 3x3 intrinsics of the rendered ``width`` x ``height`` image.
        width, height: rendered image size in pixels.
        params: the drawn values (JSON-ready), kept with the data for inspection.
    """

    seed: int
    scene: Scene
    trajectory: Trajectory
    K: np.ndarray
    width: int
    height: int
    params: dict[str, Any]


def sample_sequence(seed: int, seconds: float, rate_hz: float, width: int = 224,
                    height: int = 168, max_tries: int = 8) -> SequenceSpec:
    """Return the varied sequence of ``seed`` (deterministic).

    A drawn room can leave no free space for the drawn camera clearance; the sampler then
    draws again from the same seed's stream (up to ``max_tries``).

    Raises:
        ValueError: when no drawn room in ``max_tries`` leaves space to move.
    """
    rng = np.random.default_rng([int(seed), 0x5CE4E])
    last_error: Exception | None = None
    for attempt in range(max_tries):
        w = round(float(rng.uniform(3.5, 9.0)), 2)
        d = round(float(rng.uniform(3.0, 8.0)), 2)
        h = round(float(rng.uniform(2.3, 3.4)), 2)
        n_opt = int(rng.integers(1, min(9, len(OPTIONAL_CATEGORIES)) + 1))
        base = make_scene(int(seed) * 16 + attempt, width=w, depth=d, height=h,
                          num_optional=(n_opt, n_opt))
        walls = tuple(tuple(int(c) for c in np.clip(np.array(col) * rng.uniform(0.75, 1.1)
                                                    + rng.normal(0.0, 10.0, 3), 30, 250))
                      for col in base.wall_colours)
        floor = np.array(_FLOORS[int(rng.integers(len(_FLOORS)))], dtype=np.float64)
        floor = tuple(int(c) for c in np.clip(floor + rng.normal(0.0, 12.0, 3), 20, 240))
        azimuth = float(rng.uniform(-math.pi, math.pi))
        elevation = float(rng.uniform(math.radians(35.0), math.radians(85.0)))
        light = (round(math.cos(elevation) * math.cos(azimuth), 4),
                 round(math.cos(elevation) * math.sin(azimuth), 4), round(math.sin(elevation), 4))
        scene = dataclasses.replace(base, seed=int(seed), wall_colours=walls, floor_rgb=floor,
                                    light_dir=light,
                                    light_gain=round(float(rng.uniform(0.7, 1.25)), 3))
        params = {
            'camera_height': round(float(rng.uniform(0.3, 1.7)), 3),
            'pitch_deg': round(float(rng.uniform(0.0, 25.0)), 2),
            'speed': round(float(rng.uniform(0.25, 0.9)), 3),
            'turn_rate': round(float(rng.uniform(0.5, 1.4)), 3),
            'hfov_deg': round(float(rng.uniform(55.0, 85.0)), 2),
        }
        # Low cameras fit closer to furniture; tall rooms need no more clearance.
        clearance = 0.35 if params['camera_height'] < 0.8 else 0.45
        try:
            trajectory = make_trajectory(scene, seconds=seconds, rate_hz=rate_hz,
                                         seed=int(seed), camera_height=params['camera_height'],
                                         pitch_deg=params['pitch_deg'], speed=params['speed'],
                                         turn_rate=params['turn_rate'], clearance=clearance)
        except ValueError as exc:
            last_error = exc
            continue
        K = intrinsics(width, height, params['hfov_deg'])
        params.update({'attempt': attempt, 'room': [w, d, h], 'optional_categories': n_opt,
                       'clearance': clearance, 'seconds': seconds, 'rate_hz': rate_hz})
        return SequenceSpec(int(seed), scene, trajectory, K, int(width), int(height), params)
    raise ValueError(f'seed {seed}: no room with free space in {max_tries} draws ({last_error})')
