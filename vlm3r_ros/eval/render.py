"""Vectorised NumPy ray casting of :class:`~vlm3r_ros.eval.scenes.Scene` rooms.

One ray per pixel (pinhole, OpenCV axes, pixel centres at integer coordinates) against
the room's floor, ceiling and four walls and every object's box or upright cylinder.
Only the pixels inside an object's projected bounding rectangle test that object, which
keeps a 320x240 frame around 10-20 ms on one core. Surfaces get directional plus ambient
light and world-fixed textures (wood floor, tiled ceiling, wallpaper, object grain and
edges) so that images have features to track; textures never change between frames.

Depth is the z-depth along the optical axis in metres (as in a ROS 32FC1 depth image).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

import numpy as np

from vlm3r_ros.eval.scenes import Scene, SceneObject, Trajectory

# Codes in the id map for room surfaces; objects use their instance id (>= 0).
FLOOR, CEILING = -1, -2
WALL_CODES = (-3, -4, -5, -6)  # walls at y=-D/2, x=+W/2, y=+D/2, x=-W/2

_CEILING_RGB = np.array([236.0, 236.0, 230.0], dtype=np.float32)


@dataclass(frozen=True)
class RenderOutput:
    """One rendered view: ``rgb`` (H, W, 3) uint8, ``depth`` (H, W) float32 metres, and
    ``ids`` (H, W) int16 (object instance id, or a negative room-surface code)."""

    rgb: np.ndarray
    depth: np.ndarray
    ids: np.ndarray


def intrinsics(width: int, height: int, hfov_deg: float = 70.0) -> np.ndarray:
    """Return a 3x3 pinhole matrix with square pixels, horizontal field of view
    ``hfov_deg`` and the principal point at the image centre ((W-1)/2, (H-1)/2).

    Raises ValueError for non-positive sizes or a field of view outside (0, 180).
    """
    if width <= 0 or height <= 0 or not 0.0 < hfov_deg < 180.0:
        raise ValueError('width/height must be positive and hfov_deg in (0, 180)')
    f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0],
                     [0.0, 0.0, 1.0]])


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Return ``K`` for an image resized by (sx, sy), keeping pixel centres consistent."""
    out = np.array(K, dtype=np.float64).copy()
    out[0, 0] *= sx
    out[1, 1] *= sy
    out[0, 2] = (out[0, 2] + 0.5) * sx - 0.5
    out[1, 2] = (out[1, 2] + 0.5) * sy - 0.5
    return out


@lru_cache(maxsize=8)
def _camera_rays(key: tuple[float, ...], width: int, height: int) -> np.ndarray:
    """Return per-pixel ray directions (H, W, 3) in camera axes with z = 1 (read-only)."""
    fx, fy, cx, cy = key
    u = (np.arange(width, dtype=np.float32) - cx) / fx
    v = (np.arange(height, dtype=np.float32) - cy) / fy
    rays = np.empty((height, width, 3), dtype=np.float32)
    rays[..., 0] = u[None, :]
    rays[..., 1] = v[:, None]
    rays[..., 2] = 1.0
    rays.setflags(write=False)
    return rays


def _hash(ix: np.ndarray, iy: np.ndarray, salt: float) -> np.ndarray:
    """Return a deterministic pseudo-random value in [0, 1) per integer lattice point."""
    h = np.sin(ix * 12.9898 + iy * 78.233 + salt * 37.719) * 43758.5453
    return h - np.floor(h)


def _value_noise(x: np.ndarray, y: np.ndarray, salt: float) -> np.ndarray:
    """Return smooth value noise in [0, 1) at (x, y) (lattice spacing 1)."""
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    fx = fx * fx * (3.0 - 2.0 * fx)
    fy = fy * fy * (3.0 - 2.0 * fy)
    a = _hash(x0, y0, salt)
    b = _hash(x0 + 1.0, y0, salt)
    c = _hash(x0, y0 + 1.0, salt)
    d = _hash(x0 + 1.0, y0 + 1.0, salt)
    return (a + (b - a) * fx) * (1.0 - fy) + (c + (d - c) * fx) * fy


def _room_hits(scene: Scene, origin: np.ndarray, dirs: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Return (t, code) of the first room surface hit by each ray (camera inside the room)."""
    bounds = ((scene.width / 2.0, WALL_CODES[1], WALL_CODES[3]),
              (scene.depth / 2.0, WALL_CODES[2], WALL_CODES[0]))
    t = np.full(dirs.shape[:2], np.inf, dtype=np.float32)
    code = np.zeros(dirs.shape[:2], dtype=np.int16)
    planes = [(axis, lim, plus, minus) for axis, (lim, plus, minus) in enumerate(bounds)]
    planes.append((2, None, CEILING, FLOOR))
    for axis, lim, plus, minus in planes:
        d = dirs[..., axis]
        hi = scene.height if axis == 2 else lim
        lo = 0.0 if axis == 2 else -lim
        with np.errstate(divide='ignore', invalid='ignore'):
            # Each ray leaves the slab through the bound its direction points at.
            ta = np.where(d > 0, (hi - origin[axis]) / d, (lo - origin[axis]) / d)
        ta = np.where(d == 0, np.float32(np.inf), ta).astype(np.float32)
        closer = ta < t
        t = np.where(closer, ta, t)
        code = np.where(closer, np.where(d > 0, plus, minus), code).astype(np.int16)
    return t, code


def _box_hit(obj: SceneObject, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Return the distance t along each ray to where it enters an oriented box (inf: miss)."""
    c, s = math.cos(obj.yaw), math.sin(obj.yaw)
    rel = origin - np.array(obj.center, dtype=np.float32)
    o_l = (c * rel[0] + s * rel[1], -s * rel[0] + c * rel[1], float(rel[2]))
    dx, dy = dirs[..., 0], dirs[..., 1]
    d_l = (c * dx + s * dy, -s * dx + c * dy, dirs[..., 2])
    half = [v / 2.0 for v in obj.size]
    # Slab test written per axis: reductions over a length-3 axis are slow in NumPy.
    t_near = t_far = None
    for axis in range(3):
        d = np.where(np.abs(d_l[axis]) < 1e-9, np.float32(1e-9), d_l[axis])
        inv = 1.0 / d
        t1 = (-half[axis] - o_l[axis]) * inv
        t2 = (half[axis] - o_l[axis]) * inv
        lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
        t_near = lo if t_near is None else np.maximum(t_near, lo)
        t_far = hi if t_far is None else np.minimum(t_far, hi)
    hit = (t_near <= t_far) & (t_near > 1e-4)
    return np.where(hit, t_near, np.float32(np.inf)).astype(np.float32)


def _cylinder_hit(obj: SceneObject, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Return the distance t along each ray to where it enters an upright cylinder."""
    r = obj.radius
    hz = obj.size[2] / 2.0
    ox, oy, oz = (origin - np.array(obj.center, dtype=np.float32)).tolist()
    dx, dy, dz = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    a = dx * dx + dy * dy
    b = 2.0 * (ox * dx + oy * dy)
    cc = ox * ox + oy * oy - r * r
    disc = b * b - 4.0 * a * cc
    with np.errstate(divide='ignore', invalid='ignore'):
        ts = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a)
    side = (disc >= 0) & (a > 1e-12) & (ts > 1e-4) & (np.abs(oz + ts * dz) <= hz)
    t = np.where(side, ts, np.float32(np.inf)).astype(np.float32)
    if abs(oz) > hz:
        # The camera is above (or below) the cylinder: it may see the top (bottom) cap.
        cap_z = hz if oz > 0 else -hz
        with np.errstate(divide='ignore', invalid='ignore'):
            tc = (cap_z - oz) / dz
        px, py = ox + tc * dx, oy + tc * dy
        cap = (tc > 1e-4) & (px * px + py * py <= r * r) & (tc < t)
        t = np.where(cap, tc, t).astype(np.float32)
    return t


def _object_normals(obj: SceneObject, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (world normals (M, 3), object-local points (M, 3)) for surface points.

    The face of a box is the axis along which the point is relatively farthest out; a
    cylinder point is on a cap when it lies at the top or bottom height.
    """
    c, s = math.cos(obj.yaw), math.sin(obj.yaw)
    rx, ry = pts[:, 0] - obj.center[0], pts[:, 1] - obj.center[1]
    local = np.empty_like(pts)
    local[:, 0] = c * rx + s * ry
    local[:, 1] = -s * rx + c * ry
    local[:, 2] = pts[:, 2] - obj.center[2]
    normals = np.zeros_like(pts)
    half = np.array(obj.size, dtype=np.float32) / 2.0
    if obj.shape == 'box':
        rel = np.abs(local) / half
        axis = np.where((rel[:, 0] >= rel[:, 1]) & (rel[:, 0] >= rel[:, 2]), 0,
                        np.where(rel[:, 1] >= rel[:, 2], 1, 2))
        sign = np.sign(local[np.arange(len(local)), axis])
        axes_world = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
        normals = axes_world[axis] * sign[:, None]
    else:
        cap = np.abs(local[:, 2]) >= half[2] - 1e-3
        radial = np.stack([rx, ry], axis=1) / max(obj.radius, 1e-6)
        normals[:, :2] = np.where(cap[:, None], 0.0, radial)
        normals[:, 2] = np.where(cap, np.sign(local[:, 2]), 0.0)
    return normals, local


def _object_rect(obj: SceneObject, origin: np.ndarray, rot: np.ndarray, K: np.ndarray,
                 width: int, height: int) -> tuple[int, int, int, int] | None:
    """Return the pixel rectangle (u0, u1, v0, v1) that can see ``obj``, or None.

    The whole image when the object straddles the camera plane; None when it is behind.
    """
    cam = (obj.bounding_corners() - origin) @ rot
    z = cam[:, 2]
    if (z < 0.01).all():
        return None
    if (z < 0.05).any():
        return 0, width, 0, height
    u = K[0, 0] * cam[:, 0] / z + K[0, 2]
    v = K[1, 1] * cam[:, 1] / z + K[1, 2]
    u0, u1 = max(int(math.floor(u.min())) - 1, 0), min(int(math.ceil(u.max())) + 2, width)
    v0, v1 = max(int(math.floor(v.min())) - 1, 0), min(int(math.ceil(v.max())) + 2, height)
    if u0 >= u1 or v0 >= v1:
        return None
    return u0, u1, v0, v1


def _cast(scene: Scene, pose: np.ndarray, K: np.ndarray, width: int, height: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (t, ids, world ray directions, origin) for every pixel of one view."""
    pose = np.asarray(pose, dtype=np.float64)
    rot = pose[:3, :3]
    origin = pose[:3, 3].astype(np.float32)
    rays = _camera_rays((float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])),
                        int(width), int(height))
    dirs = rays @ rot.T.astype(np.float32)
    t, ids = _room_hits(scene, origin, dirs)
    for obj in scene.objects:
        rect = _object_rect(obj, origin.astype(np.float64), rot, K, width, height)
        if rect is None:
            continue
        u0, u1, v0, v1 = rect
        sub = dirs[v0:v1, u0:u1]
        hit_fn = _box_hit if obj.shape == 'box' else _cylinder_hit
        t_obj = hit_fn(obj, origin, sub)
        closer = t_obj < t[v0:v1, u0:u1]
        if not closer.any():
            continue
        t[v0:v1, u0:u1][closer] = t_obj[closer]
        ids[v0:v1, u0:u1][closer] = obj.instance_id
    return t, ids, dirs, origin


def _shade(scene: Scene, t: np.ndarray, ids: np.ndarray, dirs: np.ndarray,
           origin: np.ndarray) -> np.ndarray:
    """Return the uint8 RGB image for cast rays: base colours x lighting x textures."""
    pts = origin + dirs * t[..., None]
    x, y, z = pts[..., 0], pts[..., 1], pts[..., 2]
    sun = np.asarray(scene.light_dir, dtype=np.float32)
    sun /= max(float(np.linalg.norm(sun)), 1e-6)
    floor_rgb = np.asarray(scene.floor_rgb, dtype=np.float32)
    rgb = np.empty(t.shape + (3,), dtype=np.float32)
    light = np.empty(t.shape, dtype=np.float32)

    floor = ids == FLOOR
    if floor.any():
        fx, fy = x[floor], y[floor]
        row = np.floor(fy / 0.18)
        offset = _hash(row, row * 0.5, 3.0) * 1.2
        col = np.floor((fx + offset) / 1.2)
        tone = 0.82 + 0.3 * _hash(row, col, 5.0) + 0.08 * _value_noise(fx * 6.0, fy * 25.0, 1.0)
        seam = ((fy / 0.18 - row) < 0.05) | (((fx + offset) / 1.2 - col) < 0.012)
        tone = np.where(seam, tone * 0.55, tone)
        rgb[floor] = floor_rgb * tone[:, None]
        light[floor] = 0.55 + 0.45 * sun[2]
    ceiling = ids == CEILING
    if ceiling.any():
        cx, cy = x[ceiling] / 0.6, y[ceiling] / 0.6
        seam = ((cx - np.floor(cx)) < 0.03) | ((cy - np.floor(cy)) < 0.03)
        tone = np.where(seam, 0.8, 0.97 + 0.03 * _value_noise(cx * 3.0, cy * 3.0, 2.0))
        rgb[ceiling] = _CEILING_RGB * tone[:, None]
        light[ceiling] = 0.8
    wall_normals = ((0.0, 1.0), (-1.0, 0.0), (0.0, -1.0), (1.0, 0.0))
    for i, code in enumerate(WALL_CODES):
        wall = ids == code
        if not wall.any():
            continue
        along = x[wall] if i in (0, 2) else y[wall]
        wz = z[wall]
        base = np.array(scene.wall_colours[i], dtype=np.float32)
        tone = (0.9 + 0.05 * np.sin(along * (2.0 * math.pi / 0.25))
                + 0.2 * _value_noise(along * 1.5, wz * 1.5, 10.0 + i))
        col = base * tone[:, None]
        skirting = wz < 0.1
        col[skirting] = (200.0, 200.0, 196.0)
        trim = np.abs(wz - 0.9) < 0.02
        col[trim] *= 0.7
        rgb[wall] = col
        nx, ny = wall_normals[i]
        light[wall] = 0.6 + 0.4 * max(nx * sun[0] + ny * sun[1], 0.0) + 0.1 * (i % 2)

    for obj in scene.objects:
        mask = ids == obj.instance_id
        if not mask.any():
            continue
        n, local = _object_normals(obj, pts[mask])
        ox, oy, oz = x[mask], y[mask], z[mask]
        lam = np.maximum(n @ sun, 0.0)
        tone = 0.88 + 0.24 * _value_noise((ox + 0.7 * oz) * 7.0, (oy - 0.5 * oz) * 7.0,
                                          20.0 + obj.instance_id)
        half = np.array(obj.size, dtype=np.float32) / 2.0
        if obj.shape == 'box':
            # Darken near edges so that box outlines are visible whatever the colours.
            edge = half - np.minimum(0.025, half * 0.3)
            near = ((np.abs(local[:, 0]) > edge[0]).astype(np.int8)
                    + (np.abs(local[:, 1]) > edge[1]) + (np.abs(local[:, 2]) > edge[2])) >= 2
            tone = np.where(near, tone * 0.55, tone)
        else:
            ang = np.arctan2(local[:, 1], local[:, 0])
            rim = np.abs(np.abs(local[:, 2]) - half[2]) < 0.015
            tone = tone * (0.93 + 0.07 * np.cos(ang * 8.0)) * np.where(rim, 0.6, 1.0)
        rgb[mask] = np.array(obj.rgb, dtype=np.float32) * tone[:, None]
        light[mask] = 0.45 + 0.55 * lam
    # Mild falloff with distance keeps far walls a little darker, like a lit room.
    light *= scene.light_gain / (1.0 + 0.015 * t * t)
    out = np.clip(rgb * light[..., None], 0.0, 255.0)
    return out.astype(np.uint8)


def render_full(scene: Scene, pose: np.ndarray, K: np.ndarray, width: int,
                height: int) -> RenderOutput:
    """Return the RGB image, z-depth (m) and instance-id map for camera ``pose``.

    ``pose`` is 4x4 camera-to-world (OpenCV axes). The camera must be inside the room.
    """
    t, ids, dirs, origin = _cast(scene, pose, K, width, height)
    rgb = _shade(scene, t, ids, dirs, origin)
    return RenderOutput(rgb=rgb, depth=t.astype(np.float32), ids=ids)


def render(scene: Scene, pose: np.ndarray, K: np.ndarray, width: int,
           height: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (rgb uint8 (H, W, 3), depth float32 (H, W) z-depth in metres) for ``pose``."""
    out = render_full(scene, pose, K, width, height)
    return out.rgb, out.depth


def render_ids(scene: Scene, pose: np.ndarray, K: np.ndarray, width: int,
               height: int) -> np.ndarray:
    """Return only the instance-id map (H, W) int16 (no shading; faster)."""
    _, ids, _, _ = _cast(scene, pose, K, width, height)
    return ids


def render_sequence(scene: Scene, trajectory: Trajectory, K: np.ndarray, width: int,
                    height: int) -> Iterator[RenderOutput]:
    """Yield :func:`render_full` for every pose of ``trajectory`` in order."""
    for pose in trajectory.poses:
        yield render_full(scene, pose, K, width, height)
