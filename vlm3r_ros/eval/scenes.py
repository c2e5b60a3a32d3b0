"""Synthetic rooms with labelled objects, and robot-like camera trajectories through them.

Conventions used everywhere in ``vlm3r_ros.eval``:

* World frame: metres, right-handed, **z up**. The room floor is the plane z = 0, the
  room spans x in [-width/2, width/2], y in [-depth/2, depth/2] and z in [0, height].
* Objects are vertical prisms: an oriented box (``shape='box'``) or an upright cylinder
  (``shape='cylinder'``), standing anywhere between z_min and z_max; ``yaw`` turns the
  object's local x axis (its width) about world z; its local +y axis is its front.
* Poses are 4x4 **camera-to-world** transforms in the OpenCV camera convention: camera
  x right, y down, z forward (optical axis). A world point p maps to camera coordinates
  ``R.T @ (p - t)`` with ``R = pose[:3, :3]``, ``t = pose[:3, 3]``.

Everything is deterministic for a given seed.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

# Named colours (sRGB, 0..255) used for objects; names go into the scene description.
COLOURS: dict[str, tuple[int, int, int]] = {
    'red': (196, 48, 43),
    'green': (62, 140, 70),
    'blue': (48, 86, 176),
    'yellow': (226, 190, 60),
    'orange': (222, 120, 40),
    'purple': (120, 70, 150),
    'pink': (222, 130, 160),
    'brown': (120, 78, 46),
    'beige': (214, 196, 160),
    'white': (236, 236, 232),
    'grey': (128, 128, 128),
    'black': (36, 36, 40),
    'teal': (40, 140, 140),
}


DEFAULT_LIGHT_DIR: tuple[float, float, float] = (0.3, 0.45, 0.84)
DEFAULT_FLOOR_RGB: tuple[int, int, int] = (168, 124, 84)


@dataclass(frozen=True)
class CategorySpec:
    """How a category looks and where it goes.

    Sizes are (min, max) ranges in metres for width, depth and height; cylinders use the
    width as diameter. ``placement`` is 'wall' (back against a wall, facing the room) or
    'free' (anywhere in the room); ``z_base`` is the range of the object's lowest point.
    """

    name: str
    shape: str
    width: tuple[float, float]
    depth: tuple[float, float]
    height: tuple[float, float]
    placement: str
    colours: tuple[str, ...]
    max_count: int = 1
    z_base: tuple[float, float] = (0.0, 0.0)


CATEGORIES: dict[str, CategorySpec] = {spec.name: spec for spec in (
    CategorySpec('chair', 'box', (0.44, 0.52), (0.44, 0.52), (0.80, 0.95), 'free',
                 ('red', 'blue', 'green', 'black', 'brown', 'orange'), max_count=4),
    CategorySpec('table', 'box', (1.00, 1.50), (0.70, 0.90), (0.72, 0.78), 'free',
                 ('brown', 'white', 'beige', 'black')),
    CategorySpec('sofa', 'box', (1.60, 2.10), (0.80, 0.95), (0.75, 0.90), 'wall',
                 ('grey', 'blue', 'green', 'beige', 'purple')),
    CategorySpec('bed', 'box', (1.40, 1.70), (1.90, 2.05), (0.50, 0.60), 'wall',
                 ('white', 'beige', 'blue', 'pink')),
    CategorySpec('tv', 'box', (0.90, 1.30), (0.06, 0.10), (0.55, 0.75), 'wall',
                 ('black',), z_base=(0.90, 1.10)),
    CategorySpec('refrigerator', 'box', (0.60, 0.80), (0.60, 0.72), (1.70, 1.90), 'wall',
                 ('white', 'grey')),
    CategorySpec('toilet', 'box', (0.38, 0.44), (0.62, 0.72), (0.72, 0.80), 'wall',
                 ('white',)),
    CategorySpec('door', 'box', (0.80, 0.95), (0.05, 0.06), (2.00, 2.10), 'wall',
                 ('brown', 'white', 'grey')),
    CategorySpec('cabinet', 'box', (0.80, 1.20), (0.40, 0.50), (0.80, 1.20), 'wall',
                 ('brown', 'white', 'teal', 'yellow')),
    CategorySpec('plant', 'cylinder', (0.30, 0.45), (0.30, 0.45), (0.60, 1.30), 'free',
                 ('green',), max_count=3),
    CategorySpec('lamp', 'cylinder', (0.25, 0.40), (0.25, 0.40), (1.40, 1.70), 'free',
                 ('yellow', 'white', 'orange'), max_count=2),
    CategorySpec('trash can', 'cylinder', (0.25, 0.35), (0.25, 0.35), (0.40, 0.60), 'free',
                 ('grey', 'black', 'blue'), max_count=2),
)}

# Categories that a scene may add besides the always-present chairs and door.
OPTIONAL_CATEGORIES: tuple[str, ...] = (
    'table', 'sofa', 'bed', 'tv', 'refrigerator', 'toilet', 'cabinet', 'plant', 'lamp',
    'trash can')


@dataclass(frozen=True)
class SceneObject:
    """One labelled object: an upright box or cylinder.

    ``center`` is the centre of the prism (x, y, z); ``size`` is (width, depth, height)
    in metres (cylinder diameter = width = depth); ``yaw`` is in radians about world z.
    """

    instance_id: int
    category: str
    colour: str
    shape: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float = 0.0

    @property
    def rgb(self) -> tuple[int, int, int]:
        """Return the object's base colour as (r, g, b) in 0..255."""
        return COLOURS[self.colour]

    @property
    def z_min(self) -> float:
        """Return the height of the object's lowest point (m)."""
        return self.center[2] - self.size[2] / 2.0

    @property
    def z_max(self) -> float:
        """Return the height of the object's highest point (m)."""
        return self.center[2] + self.size[2] / 2.0

    @property
    def radius(self) -> float:
        """Return the cylinder radius (half the width; meaningful for cylinders)."""
        return self.size[0] / 2.0

    @property
    def longest_dimension(self) -> float:
        """Return the longest of width, depth and height (m), as VSI-Bench asks for."""
        return float(max(self.size))

    def footprint(self) -> np.ndarray:
        """Return the box footprint's 4 corners (4, 2), counter-clockwise, in world xy.

        For a cylinder this is the square circumscribing its circular footprint.
        """
        hw, hd = self.size[0] / 2.0, self.size[1] / 2.0
        local = np.array([[-hw, -hd], [hw, -hd], [hw, hd], [-hw, hd]])
        return local @ _rot2(self.yaw).T + np.array(self.center[:2])

    def corners(self) -> np.ndarray:
        """Return points spanning the object's hull (M, 3) in world coordinates.

        Boxes give their 8 corners; cylinders 16 points on each rim circle. Used for
        projections and for camera-relative extents.
        """
        if self.shape == 'box':
            xy = self.footprint()
        else:
            ang = np.linspace(0.0, 2.0 * math.pi, 16, endpoint=False)
            xy = np.stack([np.cos(ang), np.sin(ang)], 1) * self.radius + np.array(self.center[:2])
        low = np.column_stack([xy, np.full(len(xy), self.z_min)])
        high = np.column_stack([xy, np.full(len(xy), self.z_max)])
        return np.vstack([low, high])

    def bounding_corners(self) -> np.ndarray:
        """Return the 8 corners (8, 3) of the object's oriented bounding box."""
        xy = self.footprint()
        return np.vstack([np.column_stack([xy, np.full(4, self.z_min)]),
                          np.column_stack([xy, np.full(4, self.z_max)])])

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready description of the object."""
        return {
            'instance_id': self.instance_id, 'category': self.category,
            'colour': self.colour, 'shape': self.shape,
            'center': [round(float(v), 4) for v in self.center],
            'size': [round(float(v), 4) for v in self.size],
            'yaw': round(float(self.yaw), 6),
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> 'SceneObject':
        """Rebuild an object from :meth:`to_dict` output; raises KeyError if incomplete."""
        return SceneObject(
            instance_id=int(data['instance_id']), category=str(data['category']),
            colour=str(data['colour']), shape=str(data['shape']),
            center=tuple(float(v) for v in data['center']),  # type: ignore[arg-type]
            size=tuple(float(v) for v in data['size']),  # type: ignore[arg-type]
            yaw=float(data['yaw']))


@dataclass(frozen=True)
class Scene:
    """A rectangular room (metres) and the objects in it; see the module conventions."""

    seed: int
    width: float
    depth: float
    height: float
    objects: tuple[SceneObject, ...]
    wall_colours: tuple[tuple[int, int, int], ...] = field(
        default=((214, 205, 186), (196, 208, 214), (220, 210, 196), (204, 214, 200)))
    # Lighting and floor finish (defaults: the look of every scene before these existed;
    # the training-set sampler varies them so that no one look is memorised).
    light_dir: tuple[float, float, float] = DEFAULT_LIGHT_DIR
    light_gain: float = 1.0
    floor_rgb: tuple[int, int, int] = DEFAULT_FLOOR_RGB

    @property
    def area(self) -> float:
        """Return the floor area in square metres."""
        return self.width * self.depth

    def counts(self) -> dict[str, int]:
        """Return the number of instances per category."""
        out: dict[str, int] = {}
        for obj in self.objects:
            out[obj.category] = out.get(obj.category, 0) + 1
        return out

    def unique_categories(self) -> list[str]:
        """Return the categories with exactly one instance, sorted by name."""
        return sorted(c for c, n in self.counts().items() if n == 1)

    def instances(self, category: str) -> list[SceneObject]:
        """Return the objects of one category (empty if none)."""
        return [o for o in self.objects if o.category == category]

    def object(self, instance_id: int) -> SceneObject:
        """Return the object with this id; raises KeyError when there is none."""
        for obj in self.objects:
            if obj.instance_id == instance_id:
                return obj
        raise KeyError(f'no object with instance_id {instance_id}')

    def contains_xy(self, xy: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Return a boolean mask: which (N, 2) points lie inside the room shrunk by margin."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return ((np.abs(xy[:, 0]) <= self.width / 2.0 - margin)
                & (np.abs(xy[:, 1]) <= self.depth / 2.0 - margin))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready description (room size, area, counts, objects, conventions)."""
        return {
            'seed': self.seed,
            'room': {'width': round(self.width, 4), 'depth': round(self.depth, 4),
                     'height': round(self.height, 4), 'area_m2': round(self.area, 4)},
            'frame_conventions': {
                'world': 'metres, z up, floor z=0, room centred on the origin',
                'pose': '4x4 camera-to-world, OpenCV camera (x right, y down, z forward)'},
            'wall_colours': [list(c) for c in self.wall_colours],
            'lighting': {'light_dir': list(self.light_dir), 'light_gain': self.light_gain,
                         'floor_rgb': list(self.floor_rgb)},
            'counts': self.counts(),
            'objects': [o.to_dict() for o in self.objects],
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> 'Scene':
        """Rebuild a scene from :meth:`to_dict` output; raises KeyError if incomplete."""
        room = data['room']
        light = data.get('lighting', {})  # absent in documents written before it existed
        return Scene(
            seed=int(data['seed']), width=float(room['width']), depth=float(room['depth']),
            height=float(room['height']),
            objects=tuple(SceneObject.from_dict(o) for o in data['objects']),
            wall_colours=tuple((int(c[0]), int(c[1]), int(c[2])) for c in data['wall_colours']),
            light_dir=tuple(float(v) for v in light.get('light_dir', DEFAULT_LIGHT_DIR)),
            light_gain=float(light.get('light_gain', 1.0)),
            floor_rgb=tuple(int(v) for v in light.get('floor_rgb', DEFAULT_FLOOR_RGB)),
        )


@dataclass(frozen=True)
class Trajectory:
    """Camera poses sampled at a fixed rate.

    ``poses`` is (N, 4, 4) camera-to-world (OpenCV camera axes), ``times`` (N,) seconds
    from the start.
    """

    poses: np.ndarray
    times: np.ndarray
    rate_hz: float

    def __len__(self) -> int:
        """Return the number of poses."""
        return int(self.poses.shape[0])

    @property
    def positions(self) -> np.ndarray:
        """Return the camera centres (N, 3) in world coordinates."""
        return self.poses[:, :3, 3]

    def stamps_ns(self, start_ns: int = 0) -> np.ndarray:
        """Return integer nanosecond stamps (N,) starting at ``start_ns``."""
        return start_ns + np.round(self.times * 1e9).astype(np.int64)


# --------------------------------------------------------------------------- geometry


def _rot2(angle: float) -> np.ndarray:
    """Return the 2x2 rotation matrix for ``angle`` radians."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _points_to_segments(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return distances (N, M) from N points to M segments a[j]-b[j] in 2D."""
    ab = b - a  # (M, 2)
    ap = points[:, None, :] - a[None, :, :]  # (N, M, 2)
    denom = np.maximum((ab * ab).sum(-1), 1e-18)
    t = np.clip((ap * ab[None]).sum(-1) / denom[None], 0.0, 1.0)
    closest = a[None] + t[..., None] * ab[None]
    return np.linalg.norm(points[:, None, :] - closest, axis=-1)


def _points_in_convex(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Return a mask of which (N, 2) points lie inside a counter-clockwise convex polygon."""
    edges = np.roll(poly, -1, axis=0) - poly
    rel = points[:, None, :] - poly[None]
    cross = edges[None, :, 0] * rel[..., 1] - edges[None, :, 1] * rel[..., 0]
    return np.all(cross >= -1e-12, axis=1)


def footprint_distance_to_points(obj: SceneObject, points_xy: np.ndarray) -> np.ndarray:
    """Return horizontal distances (N,) from points to the object's footprint (0 inside)."""
    pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    if obj.shape == 'cylinder':
        d = np.linalg.norm(pts - np.array(obj.center[:2]), axis=1) - obj.radius
        return np.maximum(d, 0.0)
    poly = obj.footprint()
    dist = _points_to_segments(pts, poly, np.roll(poly, -1, axis=0)).min(axis=1)
    return np.where(_points_in_convex(pts, poly), 0.0, dist)


def _polygons_overlap(p: np.ndarray, q: np.ndarray) -> bool:
    """Return True when two convex polygons intersect (separating-axis test)."""
    for poly in (p, q):
        edges = np.roll(poly, -1, axis=0) - poly
        normals = np.stack([-edges[:, 1], edges[:, 0]], axis=1)
        for n in normals:
            a, b = p @ n, q @ n
            if a.max() < b.min() - 1e-12 or b.max() < a.min() - 1e-12:
                return False
    return True


def footprint_distance(a: SceneObject, b: SceneObject) -> float:
    """Return the horizontal distance between two objects' footprints (0 if they touch)."""
    if a.shape == 'cylinder' and b.shape == 'cylinder':
        gap = math.dist(a.center[:2], b.center[:2]) - a.radius - b.radius
        return max(gap, 0.0)
    if a.shape == 'cylinder' or b.shape == 'cylinder':
        cyl, box = (a, b) if a.shape == 'cylinder' else (b, a)
        d = float(footprint_distance_to_points(box, np.array(cyl.center[:2]))[0])
        return max(d - cyl.radius, 0.0)
    p, q = a.footprint(), b.footprint()
    if _polygons_overlap(p, q):
        return 0.0
    d1 = _points_to_segments(p, q, np.roll(q, -1, axis=0)).min()
    d2 = _points_to_segments(q, p, np.roll(p, -1, axis=0)).min()
    return float(min(d1, d2))


def _interval_gap(lo1: float, hi1: float, lo2: float, hi2: float) -> float:
    """Return the gap between two closed intervals (0 when they overlap)."""
    return max(lo1 - hi2, lo2 - hi1, 0.0)


def object_distance(a: SceneObject, b: SceneObject) -> float:
    """Return the closest-point distance between two objects (m), 0 if they touch.

    Exact for upright prisms: the squared distance splits into the squared horizontal
    footprint distance plus the squared vertical gap.
    """
    dxy = footprint_distance(a, b)
    dz = _interval_gap(a.z_min, a.z_max, b.z_min, b.z_max)
    return math.hypot(dxy, dz)


def point_object_distance(point: Sequence[float], obj: SceneObject) -> float:
    """Return the distance from a 3D point to the nearest point of the object (m)."""
    p = np.asarray(point, dtype=np.float64)
    dxy = float(footprint_distance_to_points(obj, p[:2])[0])
    dz = _interval_gap(float(p[2]), float(p[2]), obj.z_min, obj.z_max)
    return math.hypot(dxy, dz)


# ----------------------------------------------------------------------- scene making


def _place_on_wall(rng: np.random.Generator, scene_w: float, scene_d: float,
                   size: tuple[float, float, float], wall: int,
                   gap: float) -> tuple[float, float, float]:
    """Return (x, y, yaw) for an object whose back touches ``wall`` (0:-y, 1:+x, 2:+y, 3:-x)."""
    w, d, _ = size
    along = scene_w if wall in (0, 2) else scene_d
    lim = along / 2.0 - w / 2.0 - 0.1
    s = float(rng.uniform(-lim, lim)) if lim > 0 else 0.0
    off = d / 2.0 + gap
    if wall == 0:
        return s, -scene_d / 2.0 + off, 0.0
    if wall == 1:
        return scene_w / 2.0 - off, s, math.pi / 2.0
    if wall == 2:
        return -s, scene_d / 2.0 - off, math.pi
    return -scene_w / 2.0 + off, -s, -math.pi / 2.0


def _sample_size(rng: np.random.Generator, spec: CategorySpec) -> tuple[float, float, float]:
    """Return a (w, d, h) size drawn from the category's ranges (cylinders: d = w)."""
    w = float(rng.uniform(*spec.width))
    d = w if spec.shape == 'cylinder' else float(rng.uniform(*spec.depth))
    h = float(rng.uniform(*spec.height))
    return round(w, 3), round(d, 3), round(h, 3)


def free_space_mask(scene: Scene, clearance: float, resolution: float = 0.05
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (mask, xs, ys): grid cells whose centre is ``clearance`` from walls and objects.

    ``mask`` has shape (len(ys), len(xs)); xs/ys are the cell-centre coordinates (m).
    Objects count whatever their height, since a robot base cannot pass under them here.
    """
    xs = np.arange(-scene.width / 2.0 + resolution / 2.0, scene.width / 2.0, resolution)
    ys = np.arange(-scene.depth / 2.0 + resolution / 2.0, scene.depth / 2.0, resolution)
    gx, gy = np.meshgrid(xs, ys)
    pts = np.column_stack([gx.ravel(), gy.ravel()])
    mask = scene.contains_xy(pts, margin=clearance)
    for obj in scene.objects:
        near = np.all(np.abs(pts - np.array(obj.center[:2])) <= max(obj.size[:2]) + clearance, 1)
        if near.any():
            d = footprint_distance_to_points(obj, pts[near])
            sub = mask[near]
            sub &= d >= clearance
            mask[near] = sub
    return mask.reshape(gy.shape), xs, ys


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """Return the largest 4-connected component of a boolean mask (all False if empty)."""
    if not mask.any():
        return mask.copy()
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=4)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best


def make_scene(seed: int, width: float | None = None, depth: float | None = None,
               height: float | None = None, categories: Iterable[str] | None = None,
               num_optional: tuple[int, int] = (5, 7), clearance: float = 0.45,
               min_free_fraction: float = 0.18) -> Scene:
    """Return a deterministic furnished room for ``seed``.

    The room is width x depth x height metres (drawn from 5.0-7.5 x 4.5-6.5 x 2.5-3.0 when
    not given). Chairs (2-4, around a table when there is one) and a door are always
    present; ``categories`` (default: a random choice of ``num_optional`` from
    :data:`OPTIONAL_CATEGORIES`) adds the rest, plants/lamps/trash cans possibly several
    times. Objects that do not fit without overlapping are dropped, and free objects are
    removed (last first) until the walkable area with ``clearance`` covers at least
    ``min_free_fraction`` of the floor. Raises ValueError for an unknown category.
    """
    rng = np.random.default_rng(seed)
    w = round(float(rng.uniform(5.0, 7.5)), 2) if width is None else float(width)
    d = round(float(rng.uniform(4.5, 6.5)), 2) if depth is None else float(depth)
    h = round(float(rng.uniform(2.5, 3.0)), 2) if height is None else float(height)
    if categories is None:
        k = int(rng.integers(num_optional[0], num_optional[1] + 1))
        chosen = [str(c) for c in rng.choice(OPTIONAL_CATEGORIES, size=k, replace=False)]
    else:
        chosen = [c for c in categories if c not in ('chair', 'door')]
    for name in chosen:
        if name not in CATEGORIES:
            raise ValueError(f'unknown category {name!r}; known: {sorted(CATEGORIES)}')
    wall_palette = [(214, 205, 186), (196, 208, 214), (220, 210, 196), (204, 214, 200),
                    (226, 214, 214), (200, 200, 220)]
    order = rng.permutation(len(wall_palette))[:4]
    wall_colours = tuple(wall_palette[i] for i in order)

    objects: list[SceneObject] = []
    scene_probe = Scene(seed=seed, width=w, depth=d, height=h, objects=())

    def fits(cand: SceneObject, gap: float) -> bool:
        # Footprint must be in the room and at least ``gap`` from every other object.
        if not scene_probe.contains_xy(cand.footprint(), margin=-1e-6).all():
            return False
        return all(footprint_distance(cand, o) >= gap for o in objects)

    def add(category: str, gap: float, tries: int = 60) -> SceneObject | None:
        spec = CATEGORIES[category]
        colour = str(rng.choice(spec.colours))
        for _ in range(tries):
            size = _sample_size(rng, spec)
            z0 = float(rng.uniform(*spec.z_base))
            if spec.placement == 'wall':
                wall = int(rng.integers(0, 4))
                flush = 0.0 if category == 'door' else 0.02  # doors sit in the wall plane
                x, y, yaw = _place_on_wall(rng, w, d, size, wall, flush)
            else:
                m = max(size[:2]) / 2.0 + 0.15
                x = float(rng.uniform(-w / 2.0 + m, w / 2.0 - m))
                y = float(rng.uniform(-d / 2.0 + m, d / 2.0 - m))
                yaw = float(rng.uniform(-math.pi, math.pi))
                if category == 'table':
                    yaw = float(rng.integers(0, 2)) * math.pi / 2.0 + float(rng.uniform(-0.1, 0.1))
            cand = SceneObject(len(objects), category, colour, spec.shape,
                               (round(x, 4), round(y, 4), round(z0 + size[2] / 2.0, 4)),
                               size, round(yaw, 6))
            if fits(cand, gap):
                objects.append(cand)
                return cand
        return None

    # Large wall furniture first so that it finds room, then the door, then free objects.
    wall_first = sorted((c for c in chosen if CATEGORIES[c].placement == 'wall'),
                        key=lambda c: -CATEGORIES[c].width[1])
    for cat in wall_first:
        add(cat, gap=0.3)
    add('door', gap=0.5)
    n_wall = len(objects)
    table = add('table', gap=1.0) if 'table' in chosen else None
    n_chairs = int(rng.integers(2, 5))
    for i in range(n_chairs):
        placed = None
        if table is not None and i < 4:
            placed = _add_chair_at_table(rng, table, i, objects, scene_probe)
        if placed is None:
            add('chair', gap=0.6)
    for cat in chosen:
        spec = CATEGORIES[cat]
        if spec.placement != 'free' or cat == 'table':
            continue
        for _ in range(int(rng.integers(1, spec.max_count + 1))):
            add(cat, gap=0.6)

    # Keep a walkable area for the camera: drop free objects (last first) until it exists.
    while True:
        scene = Scene(seed=seed, width=w, depth=d, height=h, objects=tuple(objects),
                      wall_colours=wall_colours)
        mask, _, _ = free_space_mask(scene, clearance, 0.1)
        if _largest_component(mask).mean() >= min_free_fraction or len(objects) <= n_wall:
            break
        objects.pop()
    # Renumber so that ids are 0..n-1 in placement order.
    objects = [SceneObject(i, o.category, o.colour, o.shape, o.center, o.size, o.yaw)
               for i, o in enumerate(objects)]
    return Scene(seed=seed, width=w, depth=d, height=h, objects=tuple(objects),
                 wall_colours=wall_colours)


def _add_chair_at_table(rng: np.random.Generator, table: SceneObject, side: int,
                        objects: list[SceneObject], probe: Scene) -> SceneObject | None:
    """Place a chair facing ``table`` on one of its sides; return it or None if it clashes."""
    spec = CATEGORIES['chair']
    size = _sample_size(rng, spec)
    hw, hd = table.size[0] / 2.0, table.size[1] / 2.0
    # Local offsets (table frame) and the chair yaw that makes its front face the table.
    sides = [((0.0, -hd - size[1] / 2.0 - 0.08), 0.0), ((0.0, hd + size[1] / 2.0 + 0.08), math.pi),
             ((-hw - size[1] / 2.0 - 0.08, 0.0), -math.pi / 2.0),
             ((hw + size[1] / 2.0 + 0.08, 0.0), math.pi / 2.0)]
    (ox, oy), yaw = sides[side % 4]
    # Slide the chair a little along the table edge so that scenes differ.
    if side % 4 < 2:
        ox += float(rng.uniform(-0.15, 0.15))
    else:
        oy += float(rng.uniform(-0.1, 0.1))
    c = np.array(table.center[:2]) + _rot2(table.yaw) @ np.array([ox, oy])
    chair = SceneObject(len(objects), 'chair', str(rng.choice(spec.colours)), 'box',
                        (round(float(c[0]), 4), round(float(c[1]), 4), round(size[2] / 2.0, 4)),
                        size, round(table.yaw + yaw, 6))
    if not probe.contains_xy(chair.footprint(), margin=0.05).all():
        return None
    for o in objects:
        gap = 0.05 if o.instance_id == table.instance_id or o.category == 'chair' else 0.6
        if footprint_distance(chair, o) < gap:
            return None
    objects.append(chair)
    return chair


# ------------------------------------------------------------------------- trajectory


def camera_pose(position: Sequence[float], yaw: float, pitch: float) -> np.ndarray:
    """Return a 4x4 camera-to-world pose looking along heading ``yaw`` (rad about z).

    ``pitch`` < 0 tilts the optical axis down. OpenCV axes: x right, y down, z forward.
    """
    cp, sp = math.cos(pitch), math.sin(pitch)
    forward = np.array([math.cos(yaw) * cp, math.sin(yaw) * cp, sp])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2] = right, down, forward
    pose[:3, 3] = position
    return pose


def _segment_free(mask: np.ndarray, xs: np.ndarray, ys: np.ndarray, res: float,
                  a: np.ndarray, b: np.ndarray) -> bool:
    """Return True when every grid cell along segment a-b is free."""
    n = max(2, int(math.ceil(np.linalg.norm(b - a) / (res * 0.5))) + 1)
    pts = a[None] + np.linspace(0.0, 1.0, n)[:, None] * (b - a)[None]
    ix = np.clip(np.round((pts[:, 0] - xs[0]) / res).astype(int), 0, len(xs) - 1)
    iy = np.clip(np.round((pts[:, 1] - ys[0]) / res).astype(int), 0, len(ys) - 1)
    return bool(mask[iy, ix].all())


def _smoothstep(u: np.ndarray) -> np.ndarray:
    """Return 3u^2 - 2u^3: zero velocity at both ends, so segments join smoothly."""
    return u * u * (3.0 - 2.0 * u)


def _wrap(angle: float) -> float:
    """Return ``angle`` wrapped to [-pi, pi)."""
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def make_trajectory(scene: Scene, seconds: float = 30.0, rate_hz: float = 15.0, seed: int = 0,
                    camera_height: float | None = None, pitch_deg: float | None = None,
                    clearance: float = 0.45, speed: float = 0.5, turn_rate: float = 0.9,
                    resolution: float = 0.05) -> Trajectory:
    """Return a robot-like camera trajectory of ``seconds`` at ``rate_hz`` through ``scene``.

    The robot drives straight between waypoints of a visibility graph over the free
    space (at least ``clearance`` m from walls and object footprints), turns on the spot
    at each waypoint (sometimes an extra look-around turn), and keeps revisiting places:
    every third goal is an earlier waypoint. Motion uses smoothstep profiles (peak
    ``speed`` m/s, ``turn_rate`` rad/s), so poses are smooth. The camera sits at
    ``camera_height`` (1.0-1.5 m) pitched down by ``pitch_deg`` (8-18 degrees) when not
    given. Raises ValueError when the room has no free space for the clearance.
    """
    if seconds <= 0 or rate_hz <= 0:
        raise ValueError('seconds and rate_hz must be positive')
    rng = np.random.default_rng(seed + 7919 * (scene.seed + 1))
    cam_h = float(rng.uniform(1.0, 1.5)) if camera_height is None else float(camera_height)
    pitch = -math.radians(float(rng.uniform(8.0, 18.0)) if pitch_deg is None else pitch_deg)
    mask, xs, ys = free_space_mask(scene, clearance, resolution)
    mask = _largest_component(mask)
    if not mask.any():
        raise ValueError('no free space for the camera with this clearance')
    # Prefer waypoints well inside the free space, so that turning on the spot does
    # not stare at a wall from 0.5 m away for seconds.
    inner = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5) * resolution >= 0.4
    iy, ix = np.nonzero(inner if inner.sum() >= 30 else mask)
    cells = np.column_stack([xs[ix], ys[iy]])
    # Spread-out waypoints by farthest-point sampling from a random free cell.
    n_way = int(min(14, max(4, len(cells) // 40)))
    first = int(rng.integers(len(cells)))
    chosen = [first]
    dmin = np.linalg.norm(cells - cells[first], axis=1)
    for _ in range(n_way - 1):
        nxt = int(np.argmax(dmin))
        if dmin[nxt] < 0.3:
            break
        chosen.append(nxt)
        dmin = np.minimum(dmin, np.linalg.norm(cells - cells[nxt], axis=1))
    pts = cells[chosen]
    n = len(pts)
    adj: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if _segment_free(mask, xs, ys, resolution, pts[i], pts[j]):
                dist = float(np.linalg.norm(pts[i] - pts[j]))
                adj[i].append((j, dist))
                adj[j].append((i, dist))

    def shortest(src: int, dst: int) -> list[int]:
        best = {src: 0.0}
        prev: dict[int, int] = {}
        heap = [(0.0, src)]
        while heap:
            cost, u = heapq.heappop(heap)
            if u == dst:
                break
            if cost > best.get(u, math.inf):
                continue
            for v, wgt in adj[u]:
                if cost + wgt < best.get(v, math.inf):
                    best[v], prev[v] = cost + wgt, u
                    heapq.heappush(heap, (cost + wgt, v))
        if dst not in best:
            return []
        path = [dst]
        while path[-1] != src:
            path.append(prev[path[-1]])
        return path[::-1]

    # Segments: ('turn', yaw0, yaw1, T) or ('move', p0, p1, yaw, T).
    segments: list[tuple[Any, ...]] = []
    total = 0.0
    cur = 0
    yaw = float(rng.uniform(-math.pi, math.pi))
    visits = np.zeros(n)
    visits[cur] = 1
    history = [cur]
    goal_count = 0

    def add_turn(target: float) -> None:
        nonlocal yaw, total
        delta = _wrap(target - yaw)
        if abs(delta) < 1e-3:
            return
        dur = 1.5 * abs(delta) / turn_rate
        segments.append(('turn', yaw, yaw + delta, dur))
        yaw += delta
        total += dur

    # A first look-around so that the start sees more than one wall.
    add_turn(yaw + float(rng.choice([-1.0, 1.0])) * float(rng.uniform(1.0, 2.0)))
    while total < seconds:
        goal_count += 1
        reachable = [j for j in range(n) if j != cur and shortest(cur, j)]
        if not reachable:
            # Nowhere to drive: spin in place for the rest of the time.
            add_turn(yaw + float(rng.uniform(1.5, 3.0)))
            continue
        earlier = [j for j in history if j in reachable]
        if goal_count % 3 == 0 and earlier:
            goal = int(rng.choice(earlier))
        else:
            least = min(visits[j] for j in reachable)
            cands = [j for j in reachable if visits[j] == least]
            far = sorted(cands, key=lambda j: -np.linalg.norm(pts[j] - pts[cur]))
            goal = int(far[int(rng.integers(0, min(2, len(far))))])
        path = shortest(cur, goal)
        for a, b in zip(path[:-1], path[1:]):
            p0, p1 = pts[a], pts[b]
            heading = math.atan2(p1[1] - p0[1], p1[0] - p0[0])
            add_turn(heading)
            dist = float(np.linalg.norm(p1 - p0))
            dur = 1.5 * dist / speed
            segments.append(('move', p0, p1, yaw, dur))
            total += dur
            visits[b] += 1
            history.append(b)
            if rng.random() < 0.4:
                # Look around at the waypoint, as an exploring robot would.
                add_turn(yaw + float(rng.choice([-1.0, 1.0])) * float(rng.uniform(0.8, 1.8)))
        cur = goal

    count = int(round(seconds * rate_hz))
    times = np.arange(count, dtype=np.float64) / rate_hz
    starts = np.cumsum([0.0] + [s[-1] for s in segments[:-1]])
    poses = np.empty((count, 4, 4))
    seg_idx = np.clip(np.searchsorted(starts, times, side='right') - 1, 0, len(segments) - 1)
    # Track the position at each segment start so that turns know where they are.
    seg_pos = []
    p = np.array(pts[history[0]], dtype=np.float64)
    for seg in segments:
        seg_pos.append(p.copy())
        if seg[0] == 'move':
            p = np.array(seg[2], dtype=np.float64)
    for k, (t, si) in enumerate(zip(times, seg_idx)):
        seg = segments[si]
        u = float(_smoothstep(np.clip((t - starts[si]) / seg[-1], 0.0, 1.0)))
        if seg[0] == 'turn':
            xy = seg_pos[si]
            heading = seg[1] + u * (seg[2] - seg[1])
        else:
            xy = seg[1] + u * (seg[2] - seg[1])
            heading = seg[3]
        poses[k] = camera_pose((xy[0], xy[1], cam_h), heading, pitch)
    return Trajectory(poses=poses, times=times, rate_hz=float(rate_hz))
