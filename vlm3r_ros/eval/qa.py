"""Ground-truth spatial questions for a synthetic scene and camera trajectory.

Every VSI-Bench task and the five VSTI-Bench (VLM-3R) camera tasks, phrased with the
benchmarks' question templates and 'A. ...' option labels, with answers computed from
the scene geometry. Questions only mention objects the camera actually saw (pixel
counts of instance-id renders at reduced resolution), and skip ambiguous cases (near
ties, directions close to a category boundary), as the benchmarks' generators do.

Answer conventions follow VSI-Bench: counts are integers, object sizes are integer
centimetres (longest dimension), distances and areas are rounded to 0.1; multiple-choice
answers are the option letter. VSTI-Bench frame references ("frame k of N") index the N
frames sampled uniformly from the trajectory by :func:`sample_frame_indices`; each item
also carries the trajectory frame indices and times it refers to.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from vlm3r_ros.eval.render import render_ids, scale_intrinsics
from vlm3r_ros.eval.scenes import (Scene, SceneObject, Trajectory, object_distance,
                                   point_object_distance)

VSI_TASKS: tuple[str, ...] = (
    'object_counting', 'object_abs_distance', 'object_size_estimation',
    'room_size_estimation', 'object_rel_distance', 'object_rel_direction_easy',
    'object_rel_direction_medium', 'object_rel_direction_hard', 'route_planning',
    'obj_appearance_order')
VSTI_TASKS: tuple[str, ...] = (
    'camera_obj_abs_dist', 'camera_displacement', 'camera_movement_direction',
    'obj_obj_relative_pos', 'camera_obj_rel_dist')
ALL_TASKS: tuple[str, ...] = VSI_TASKS + VSTI_TASKS
NUMERIC_TASKS: frozenset[str] = frozenset({
    'object_counting', 'object_abs_distance', 'object_size_estimation',
    'room_size_estimation', 'camera_obj_abs_dist', 'camera_displacement'})
TASK_BENCHMARK: dict[str, str] = {
    **{t: 'VSI-Bench' for t in VSI_TASKS}, **{t: 'VSTI-Bench' for t in VSTI_TASKS}}

LETTERS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ'
ROUTE_NOTE = ("(Note: for each [please fill in], choose either 'turn back,' 'turn left,' "
              "or 'turn right.')")
TURN_NAMES = {'left': 'Turn Left', 'right': 'Turn Right', 'back': 'Turn Back'}


@dataclass
class QAItem:
    """One question with its ground truth.

    ``options`` are labelled 'A. ...' (empty for numeric questions); ``answer`` is the
    option letter for ``answer_type == 'option'`` and a number for 'number';
    ``answer_text`` is the correct option's text or the number as text. ``frame_indices``
    and ``frame_times`` (s) are the trajectory frames the question refers to (empty when
    it refers to the whole video); ``num_frames`` is N in "frame k of N" (0 if unused).
    ``object_ids`` are the scene instances involved; ``meta`` holds task details.
    """

    id: str
    task: str
    question: str
    options: list[str]
    answer: str | float
    answer_type: str
    benchmark: str
    answer_text: str = ''
    frame_indices: list[int] = field(default_factory=list)
    frame_times: list[float] = field(default_factory=list)
    num_frames: int = 0
    object_ids: list[int] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of all fields."""
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> 'QAItem':
        """Rebuild an item from :meth:`to_dict` output; raises TypeError on unknown keys."""
        return QAItem(**data)


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


def _mc(correct: str, distractors: Sequence[str], rng: np.random.Generator
        ) -> tuple[list[str], str, list[str]]:
    """Return (labelled options, answer letter, option texts) with shuffled order."""
    texts = [correct] + list(distractors)
    order = rng.permutation(len(texts))
    shuffled = [texts[i] for i in order]
    return label_options(shuffled), LETTERS[shuffled.index(correct)], shuffled


def _angle(forward: np.ndarray, vec: np.ndarray) -> float:
    """Return the signed angle (degrees) from ``forward`` to ``vec`` in the xy plane;
    positive means counter-clockwise seen from above, i.e. to the left."""
    cross = forward[0] * vec[1] - forward[1] * vec[0]
    return math.degrees(math.atan2(cross, float(forward[0] * vec[0] + forward[1] * vec[1])))


class _Context:
    """Shared state for the task generators of one scene and trajectory."""

    def __init__(self, scene: Scene, trajectory: Trajectory, visibility: Visibility,
                 min_fraction: float, num_frames: int) -> None:
        self.scene = scene
        self.traj = trajectory
        self.vis = visibility.visible(min_fraction)
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


Candidate = dict[str, Any]


def _counting(ctx: _Context, rng: np.random.Generator) -> list[Candidate]:
    out = []
    for cat in ctx.full_cats:
        n = len(ctx.scene.instances(cat))
        if n >= 2:  # VSI-Bench asks about categories with several instances
            out.append({'question': f'How many {cat}(s) are in this room?', 'answer': n,
                        'objects': [o.instance_id for o in ctx.scene.instances(cat)]})
    return out


def _abs_distance(ctx: _Context, rng: np.random.Generator) -> list[Candidate]:
    out = []
    for a, b in itertools.combinations(ctx.unique, 2):
        d = object_distance(a, b)
        if d < 0.3:
            continue
        first, second = (a, b) if rng.random() < 0.5 else (b, a)
        out.append({'question': ('Measuring from the closest point of each object, what is the '
                                 f'direct distance between the {first.category} and the '
                                 f'{second.category} (in meters)?'),
                    'answer': round(d, 1), 'objects': [first.instance_id, second.instance_id],
                    'meta': {'exact': d}})
    return out


def _size(ctx: _Context, rng: np.random.Generator) -> list[Candidate]:
    return [{'question': ('What is the length of the longest dimension (length, width, or '
                          f'height) of the {o.category}, measured in centimeters?'),
             'answer': int(round(o.longest_dimension * 100.0)), 'objects': [o.instance_id],
             'meta': {'exact': o.longest_dimension * 100.0}} for o in ctx.unique]


def _room_size(ctx: _Context, rng: np.random.Generator) -> list[Candidate]:
    return [{'question': ('What is the size of this room (in square meters)?\n'
                          'If multiple rooms are shown, estimate the size of the combined space.'),
             'answer': round(ctx.scene.area, 1), 'objects': [],
             'meta': {'exact': ctx.scene.area}}]


def _rel_distance(ctx: _Context, rng: np.random.Generator) -> list[Candidate]:
    out = []
    for primary in ctx.unique:
        others = [c for c in ctx.full_cats if c != primary.category]
        if len(others) < 2:
            continue
        dist = {c: min(object_distance(primary, o) for o in ctx.scene.instances(c))
                for c in others}
        tried: set[tuple[str, ...]] = set()
        for _ in range(12):
            k = min(4, len(others))
            cands = tuple(sorted(str(c) for c in rng.choice(others, size=k, replace=False)))
            if cands in tried:
                continue
            tried.add(cands)
            ds = sorted(dist[c] for c in cands)
            # Skip touching objects and near ties, which a human could not call.
            if ds[0] < 0.15 or ds[1] - ds[0] < 0.15:
                continue
            best = min(cands, key=lambda c: dist[c])
            listed = [cands[i] for i in rng.permutation(len(cands))]
            options, letter, texts = _mc(best, [c for c in cands if c != best], rng)
            out.append({'question': ('Measuring from the closest point of each object, which '
                                     f'of these objects ({", ".join(listed)}) is the closest '
                                     f'to the {primary.category}?'),
                        'options': options, 'answer': letter, 'answer_text': best,
                        'objects': [primary.instance_id]
                        + [o.instance_id for c in cands for o in ctx.scene.instances(c)],
                        'meta': {'distances': {c: dist[c] for c in cands}}})
            break
    return out


def _direction_label(level: str, angle: float) -> str | None:
    """Return the answer for a signed angle (deg, + = left) or None when ambiguous."""
    a = abs(angle)
    if level == 'easy':
        if a < 15.0 or a > 165.0:
            return None
        return 'left' if angle > 0 else 'right'
    if level == 'medium':
        if a < 15.0 or abs(a - 135.0) < 10.0:
            return None
        if a >= 135.0:
            return 'back'
        return 'left' if angle > 0 else 'right'
    if a < 10.0 or abs(a - 90.0) < 10.0 or a > 170.0:
        return None
    return ('front-' if a < 90.0 else 'back-') + ('left' if angle > 0 else 'right')


def _rel_direction(level: str) -> Callable[[_Context, np.random.Generator], list[Candidate]]:
    choices = {'easy': ['left', 'right'], 'medium': ['left', 'right', 'back'],
               'hard': ['front-left', 'front-right', 'back-left', 'back-right']}[level]

    def gen(ctx: _Context, rng: np.random.Generator) -> list[Candidate]:
        out = []
        for a, b, c in itertools.permutations(ctx.unique, 3):
            pa, pb, pc = (np.array(o.center[:2]) for o in (a, b, c))
            fwd, vec = pb - pa, pc - pa
            if np.linalg.norm(fwd) < 0.5 or np.linalg.norm(vec) < 0.5:
                continue
            label = _direction_label(level, _angle(fwd, vec))
            if label is None:
                continue
            head = (f'If I am standing by the {a.category} and facing the {b.category}, '
                    f'is the {c.category} to ')
            if level == 'easy':
                q = head + f'the left or the right of the {b.category}?'
            elif level == 'medium':
                q = head + ('my left, right, or back?\nAn object is to my back if I would have '
                            'to turn at least 135 degrees in order to face it.')
            else:
                q = head + ('my front-left, front-right, back-left, or back-right?\nThe '
                            'directions refer to the quadrants of a Cartesian plane (if I am '
                            'standing at the origin and facing along the positive y-axis).')
            options, letter, _ = _mc(label, [x for x in choices if x != label], rng)
            out.append({'question': q, 'options': options, 'answer': letter,
                        'answer_text': label,
                        'objects': [a.instance_id, b.instance_id, c.instance_id],
                        'meta': {'angle_deg': _angle(fwd, vec)}})
        return out
    return gen


def _turn(angle: float) -> str | None:
    """Return '' (no turn), 'left', 'right', 'back', or None for an ambiguous angle."""
    a = abs(angle)
    if a < 30.0:
        return ''
    if 50.0 < a < 130.0:
        return 'left' if angle > 0 else 'right'
    if a > 150.0:
        return 'back'
    return None


def _route_planning(ctx: _Context, rng: np.random.Generator) -> list[Candidate]:
    out: list[Candidate] = []
    objs = ctx.unique
    if len(objs) < 3:
        return out
    seen_keys: set[tuple[int, ...]] = set()
    for _ in range(400):
        legs = int(rng.integers(2, 4))
        if len(objs) < legs + 1:
            legs = len(objs) - 1
        pick = [objs[i] for i in rng.permutation(len(objs))[:legs + 1]]
        start, route = pick[0], pick[1:]
        # The facing object is the first waypoint or an object off the route.
        facing_pool = [o for o in objs if o is not start and o not in route]
        if not facing_pool:
            continue
        facing = (route[0] if rng.random() < 0.35
                  else facing_pool[int(rng.integers(len(facing_pool)))])
        key = tuple(o.instance_id for o in [start, facing] + route)
        if key in seen_keys:
            continue
        seen_keys.add(key)
        heading = np.array(facing.center[:2]) - np.array(start.center[:2])
        if np.linalg.norm(heading) < 0.5:
            continue
        pos = np.array(start.center[:2])
        steps: list[str] = []
        turns: list[str] = []
        ok = True
        for target in route:
            leg = np.array(target.center[:2]) - pos
            if np.linalg.norm(leg) < 0.8:
                ok = False
                break
            turn = _turn(_angle(heading, leg))
            if turn is None:
                ok = False
                break
            if turn:
                steps.append('[please fill in]')
                turns.append(turn)
            steps.append(f'Go forward until the {target.category}')
            heading, pos = leg, np.array(target.center[:2])
        if not ok or not turns:
            continue
        numbered = ' '.join(f'{i + 1}. {s}' for i, s in enumerate(steps)) + '.'
        question = (f'You are a robot beginning at the {start.category} facing the '
                    f'{facing.category}. You want to navigate to the {route[-1].category}. '
                    f'You will perform the following actions {ROUTE_NOTE}: {numbered} '
                    'You have reached the final destination.')
        correct = ', '.join(TURN_NAMES[t] for t in turns)
        alts = [', '.join(TURN_NAMES[t] for t in combo)
                for combo in itertools.product(('left', 'right', 'back'), repeat=len(turns))]
        alts = [a for a in alts if a != correct]
        pick_alt = [alts[i] for i in rng.permutation(len(alts))[:3]]
        options, letter, _ = _mc(correct, pick_alt, rng)
        out.append({'question': question, 'options': options, 'answer': letter,
                    'answer_text': correct,
                    'objects': [start.instance_id, facing.instance_id]
                    + [o.instance_id for o in route], 'meta': {'turns': turns}})
        if len(out) >= 24:
            break
    return out


def _appearance_order(ctx: _Context, rng: np.random.Generator, min_gap_s: float = 1.0
                      ) -> list[Candidate]:
    first: dict[str, float] = {}
    first_idx: dict[str, int] = {}
    for cat in ctx.scene.counts():
        cols = [o.instance_id for o in ctx.scene.instances(cat)]
        frames = np.nonzero(ctx.vis[:, cols].any(axis=1))[0]
        if frames.size:
            first_idx[cat] = int(frames[0])
            first[cat] = float(ctx.traj.times[frames[0]])
    cats = sorted(first)
    out: list[Candidate] = []
    if len(cats) < 4:
        return out
    tried: set[tuple[str, ...]] = set()
    for _ in range(60):
        four = tuple(sorted(str(c) for c in rng.choice(cats, size=4, replace=False)))
        if four in tried:
            continue
        tried.add(four)
        times = sorted(first[c] for c in four)
        if min(np.diff(times)) < min_gap_s:
            continue
        order = sorted(four, key=lambda c: first[c])
        correct = ', '.join(order)
        perms = [', '.join(p) for p in itertools.permutations(order) if list(p) != order]
        distract = [perms[i] for i in rng.permutation(len(perms))[:3]]
        listed = [four[i] for i in rng.permutation(4)]
        options, letter, _ = _mc(correct, distract, rng)
        out.append({'question': ('What will be the first-time appearance order of the following '
                                 f'categories in the video: {", ".join(listed)}?'),
                    'options': options, 'answer': letter, 'answer_text': correct,
                    'objects': [o.instance_id for c in four for o in ctx.scene.instances(c)],
                    'frames': [first_idx[c] for c in order],
                    'meta': {'first_seen_s': {c: first[c] for c in order}}})
    return out


def _camera_obj_abs_dist(ctx: _Context, rng: np.random.Generator) -> list[Candidate]:
    out = []
    for k, idx in enumerate(ctx.sampled):
        for o in ctx.visible_unique(int(idx)):
            d = point_object_distance(ctx.cam_center(int(idx)), o)
            if d < 0.3:
                continue
            out.append({'question': ('What is the approximate distance (in meters) between the '
                                     'camera (or the person filming) and the nearest point of '
                                     f'the {o.category} in {ctx.frame_desc(k)}?'),
                        'answer': round(d, 1), 'objects': [o.instance_id], 'frames': [int(idx)],
                        'frame_numbers': [k + 1], 'meta': {'exact': d}})
    return out


def _frame_pairs(ctx: _Context, rng: np.random.Generator, count: int = 40
                 ) -> list[tuple[int, int]]:
    """Return distinct random pairs (k1 < k2) of sampled-frame positions at least 2 apart."""
    n = ctx.n_sampled
    pairs = {(i, j) for i in range(n) for j in range(i + 2, n)}
    ordered = sorted(pairs)
    return [ordered[i] for i in rng.permutation(len(ordered))[:count]]


def _camera_displacement(ctx: _Context, rng: np.random.Generator) -> list[Candidate]:
    out = []
    for k1, k2 in _frame_pairs(ctx, rng):
        i1, i2 = int(ctx.sampled[k1]), int(ctx.sampled[k2])
        d = float(np.linalg.norm(ctx.cam_center(i2) - ctx.cam_center(i1)))
        if d < 0.3:
            continue
        out.append({'question': ('Approximately how far (in meters) did the camera move between '
                                 f'frame {k1 + 1} and {ctx.frame_desc(k2)}?'),
                    'answer': round(d, 1), 'objects': [], 'frames': [i1, i2],
                    'frame_numbers': [k1 + 1, k2 + 1], 'meta': {'exact': d}})
    return out


def _camera_movement_direction(ctx: _Context, rng: np.random.Generator) -> list[Candidate]:
    out = []
    for k1, k2 in _frame_pairs(ctx, rng):
        i1, i2 = int(ctx.sampled[k1]), int(ctx.sampled[k2])
        pose = ctx.traj.poses[i1]
        # Gravity-aligned start frame: forward is the optical axis flattened onto the floor.
        fwd = pose[:3, 2].copy()
        fwd[2] = 0.0
        if np.linalg.norm(fwd) < 1e-6:
            continue
        fwd /= np.linalg.norm(fwd)
        left = np.array([-fwd[1], fwd[0], 0.0])
        disp = ctx.cam_center(i2) - ctx.cam_center(i1)
        f, lft = float(disp @ fwd), float(disp @ left)
        if math.hypot(f, lft) < 0.5:
            continue
        if abs(f) >= 2.0 * abs(lft):
            label = 'Forward' if f > 0 else 'Backward'
        elif abs(lft) >= 2.0 * abs(f):
            label = 'Left' if lft > 0 else 'Right'
        else:
            continue
        options, letter, texts = _mc(label, [x for x in ('Forward', 'Backward', 'Left', 'Right')
                                             if x != label], rng)
        question = (f'During the sequence between frame {k1 + 1} and {ctx.frame_desc(k2)}, '
                    "what was the primary consistent direction of the camera's movement "
                    'relative to its orientation at the start? The options are '
                    f'{texts[0]}, {texts[1]}, {texts[2]}, and {texts[3]}.')
        out.append({'question': question, 'options': options, 'answer': letter,
                    'answer_text': label, 'objects': [], 'frames': [i1, i2],
                    'frame_numbers': [k1 + 1, k2 + 1],
                    'meta': {'forward_m': f, 'left_m': lft}})
    return out


def _camera_extent(ctx: _Context, idx: int, obj: SceneObject) -> np.ndarray:
    """Return the object's hull points (M, 3) in the camera frame at trajectory ``idx``."""
    pose = ctx.traj.poses[idx]
    return (obj.corners() - pose[:3, 3]) @ pose[:3, :3]


def _obj_obj_relative_pos(ctx: _Context, rng: np.random.Generator, margin: float = 0.1
                          ) -> list[Candidate]:
    out = []
    for k, idx in enumerate(ctx.sampled):
        vis = ctx.visible_unique(int(idx))
        for a, b in itertools.permutations(vis, 2):
            pa, pb = _camera_extent(ctx, int(idx), a), _camera_extent(ctx, int(idx), b)
            if (pa[:, 2] <= 0).any() or (pb[:, 2] <= 0).any():
                continue
            desc = ctx.frame_desc(k)
            found = []
            # Axis 2 (depth): near/far; axis 0 (x right): left/right; axis 1 (y down): up/down.
            for axis, low, high, template in (
                    (2, 'Near', 'Far', f'In {desc}, relative to the camera, is the {a.category} '
                                       f'[Near/Far] compared to the {b.category}?'),
                    (0, 'Left', 'Right', f'In {desc}, relative to the {b.category}, is the '
                                         f'{a.category} to the [Left/Right]?'),
                    (1, 'Up', 'Down', f'In {desc}, relative to the {b.category}, is the '
                                      f'{a.category} to the [Up/Down]?')):
                if pa[:, axis].max() < pb[:, axis].min() - margin:
                    found.append((template, low, high, low))
                elif pa[:, axis].min() > pb[:, axis].max() + margin:
                    found.append((template, low, high, high))
            if not found:
                continue
            template, low, high, label = found[int(rng.integers(len(found)))]
            options, letter, _ = _mc(label, [high if label == low else low], rng)
            out.append({'question': template, 'options': options, 'answer': letter,
                        'answer_text': label, 'objects': [a.instance_id, b.instance_id],
                        'frames': [int(idx)], 'frame_numbers': [k + 1],
                        'meta': {'subtype': f'{low.lower()}_{high.lower()}'}})
    return out


def _camera_obj_rel_dist(ctx: _Context, rng: np.random.Generator) -> list[Candidate]:
    out = []
    for k, idx in enumerate(ctx.sampled):
        vis = ctx.visible_unique(int(idx))
        if len(vis) < 2:
            continue
        cam = ctx.cam_center(int(idx))
        n = min(4, len(vis))
        group = [vis[i] for i in rng.permutation(len(vis))[:n]]
        dist = {o.category: point_object_distance(cam, o) for o in group}
        ds = sorted(dist.values())
        if ds[1] - ds[0] < 0.2:
            continue
        best = min(dist, key=dist.get)  # type: ignore[arg-type]
        names = [o.category for o in group]
        options, letter, _ = _mc(best, [c for c in names if c != best], rng)
        out.append({'question': ('Measuring from the closest point of each object, which of '
                                 f'these objects ({", ".join(names)}) is the closest to the '
                                 f'camera in {ctx.frame_desc(k)}?'),
                    'options': options, 'answer': letter, 'answer_text': best,
                    'objects': [o.instance_id for o in group], 'frames': [int(idx)],
                    'frame_numbers': [k + 1], 'meta': {'distances': dist}})
    return out


_GENERATORS: dict[str, Callable[[_Context, np.random.Generator], list[Candidate]]] = {
    'object_counting': _counting,
    'object_abs_distance': _abs_distance,
    'object_size_estimation': _size,
    'room_size_estimation': _room_size,
    'object_rel_distance': _rel_distance,
    'object_rel_direction_easy': _rel_direction('easy'),
    'object_rel_direction_medium': _rel_direction('medium'),
    'object_rel_direction_hard': _rel_direction('hard'),
    'route_planning': _route_planning,
    'obj_appearance_order': _appearance_order,
    'camera_obj_abs_dist': _camera_obj_abs_dist,
    'camera_displacement': _camera_displacement,
    'camera_movement_direction': _camera_movement_direction,
    'obj_obj_relative_pos': _obj_obj_relative_pos,
    'camera_obj_rel_dist': _camera_obj_rel_dist,
}


def generate_qa(scene: Scene, trajectory: Trajectory, K: np.ndarray, width: int, height: int,
                seed: int = 0, tasks: Iterable[str] = ALL_TASKS, max_per_task: int = 4,
                num_frames: int = 32, visibility: Visibility | None = None,
                min_visible_fraction: float = 0.003, visibility_scale: float = 0.5
                ) -> list[QAItem]:
    """Return ground-truth QA items for ``scene`` seen along ``trajectory``.

    Up to ``max_per_task`` items per task, chosen deterministically from ``seed``
    (each task draws from its own random stream, so selecting tasks does not change
    the others' items). An object counts as seen in a frame when it covers at least
    ``min_visible_fraction`` of an id render at ``visibility_scale`` x (width, height);
    pass ``visibility`` to reuse one. Tasks with no valid question are simply absent.
    Raises ValueError for an unknown task name.
    """
    tasks = list(tasks)
    for task in tasks:
        if task not in _GENERATORS:
            raise ValueError(f'unknown task {task!r}; known: {list(ALL_TASKS)}')
    if visibility is None:
        visibility = compute_visibility(scene, trajectory, K, width, height, visibility_scale)
    ctx = _Context(scene, trajectory, visibility, min_visible_fraction, num_frames)
    items: list[QAItem] = []
    for task in ALL_TASKS:
        if task not in tasks:
            continue
        rng = np.random.default_rng([int(seed), int(scene.seed), ALL_TASKS.index(task)])
        cands = _GENERATORS[task](ctx, rng)
        chosen = sorted(rng.permutation(len(cands))[:max_per_task].tolist())
        for n, ci in enumerate(chosen):
            c = cands[ci]
            numeric = task in NUMERIC_TASKS
            frames = [int(f) for f in c.get('frames', [])]
            items.append(QAItem(
                id=f's{scene.seed:04d}-{task}-{n:02d}', task=task, question=c['question'],
                options=list(c.get('options', [])), answer=c['answer'],
                answer_type='number' if numeric else 'option',
                benchmark=TASK_BENCHMARK[task],
                answer_text=str(c['answer']) if numeric else str(c['answer_text']),
                frame_indices=frames,
                frame_times=[float(trajectory.times[f]) for f in frames],
                num_frames=ctx.n_sampled if 'frame_numbers' in c else 0,
                object_ids=[int(i) for i in c.get('objects', [])],
                meta=_jsonable({**c.get('meta', {}),
                                **({'frame_numbers': c['frame_numbers']}
                                   if 'frame_numbers' in c else {})})))
    return items


def _jsonable(value: Any) -> Any:
    """Return ``value`` with NumPy scalars/arrays turned into plain Python types."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def qa_document(items: Sequence[QAItem], scene: Scene, **extra: Any) -> dict[str, Any]:
    """Return the JSON document for a QA set: format tag, scene description, items, extras."""
    return _jsonable({'format': 'vlm3r_ros.qa/1', 'scene': scene.to_dict(), **extra,
                      'items': [it.to_dict() for it in items]})


def save_qa(path: str | Path, items: Sequence[QAItem], scene: Scene, **extra: Any) -> Path:
    """Write :func:`qa_document` as indented JSON to ``path`` and return the path."""
    path = Path(path)
    path.write_text(json.dumps(qa_document(items, scene, **extra), indent=1), encoding='utf8')
    return path


def load_qa(path: str | Path) -> tuple[list[QAItem], dict[str, Any]]:
    """Return (items, whole document) from a file written by :func:`save_qa`.

    Raises ValueError when the file is not a vlm3r_ros QA document.
    """
    doc = json.loads(Path(path).read_text(encoding='utf8'))
    if not isinstance(doc, dict) or doc.get('format') != 'vlm3r_ros.qa/1':
        raise ValueError(f'{path} is not a vlm3r_ros QA file')
    return [QAItem.from_dict(d) for d in doc['items']], doc
