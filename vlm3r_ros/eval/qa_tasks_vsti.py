"""VSTI-Bench (VLM-3R) camera-task generators for :func:`vlm3r_ros.eval.qa.generate_qa`.

Each task has an ``official`` generator, following the rules of VLM-3R's generators
(``vlm_3r_data_process/src/tasks/vstibench``), and an ``exact`` one (this package's
earlier rules). Frames are the N trajectory frames sampled uniformly
(:func:`~vlm3r_ros.eval.qa_common.sample_frame_indices`), as the official pipeline samples
32 frames per video; "frame k of N" counts them. What the official rules do, and where
``exact`` differs:

* frame questions ask about objects that are unique by category *in that frame* (no other
  instance of the category has a pixel there), not only scene-unique ones; every
  distance and extent uses the object's oriented box (a cylinder counts as the square
  prism around it; ``exact``: scene-unique objects, true cylinders);
* ``camera_obj_abs_dist``: camera centre to the nearest box point, kept within 0.2-10 m
  (``exact``: at least 0.3 m);
* ``camera_displacement``: frame pairs 5-30 sampled frames apart, displacement within
  0.2-10 m (``exact``: any pair at least 2 frames apart, at least 0.3 m);
* ``camera_movement_direction``: the displacement in the start camera's own frame (x
  right, z forward, y ignored); an axis counts when it moved more than 1.0 m, forward/
  backward wins ties; four choices (``exact``: gravity-aligned start heading, at least
  0.5 m in the floor plane and one axis twice the other);
* ``obj_obj_relative_pos``: every pair of frame-unique objects (instance-id order) and
  each of near/far (camera z), left/right (x), up/down (y) where one box's 8 camera-frame
  corners clear the other's by more than 0.15 m; worded exactly as the templates, without
  articles: "In frame k of N, relative to the camera, is sofa [Near/Far] compared to
  bed?" (``exact``: 0.1 m on exact hulls, one axis per pair, objects fully in front of the
  camera, "the sofa ... the bed");
* ``camera_obj_rel_dist``: the frame-unique objects at least 0.5 m from the camera
  (distances to 0.01 m); for each of 4, 3 and 2 choices (official v1, v2, v3) the answer is
  the closest and distractors are drawn in random order, each kept only when 0.15 m or
  more from every option already chosen (``exact``: one random group of up to four, the
  two closest 0.2 m apart).

One official detail is deliberately not reproduced: the official absolute-distance and
displacement generators take the camera position of a camera-to-world pose as
``-R.T @ t`` (the formula for a world-to-camera pose), while their movement-direction and
relative-position generators use ``t``; every task here uses the true camera centre ``t``.
Official items carry ``meta['question_type']`` with the official sub-type name
(``obj_obj_relative_pos_nf``, ``camera_obj_rel_dist_v1``, ...).
"""
from __future__ import annotations

import itertools
import math
from typing import Callable

import numpy as np

from vlm3r_ros.eval.qa_common import Candidate, Context, box_point_distance, mc
from vlm3r_ros.eval.scenes import point_object_distance

Generator = Callable[[Context, np.random.Generator], list[Candidate]]
DIRECTIONS = ('Forward', 'Backward', 'Left', 'Right')


def _camera_obj_abs_dist(ctx: Context, rng: np.random.Generator) -> list[Candidate]:
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


def _frame_pairs(ctx: Context, rng: np.random.Generator, count: int = 40
                 ) -> list[tuple[int, int]]:
    """Return distinct random pairs (k1 < k2) of sampled-frame positions at least 2 apart."""
    n = ctx.n_sampled
    pairs = {(i, j) for i in range(n) for j in range(i + 2, n)}
    ordered = sorted(pairs)
    return [ordered[i] for i in rng.permutation(len(ordered))[:count]]


def _camera_displacement(ctx: Context, rng: np.random.Generator) -> list[Candidate]:
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


def _camera_movement_direction(ctx: Context, rng: np.random.Generator) -> list[Candidate]:
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
        options, letter, texts = mc(label, [x for x in ('Forward', 'Backward', 'Left', 'Right')
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


def _obj_obj_relative_pos(ctx: Context, rng: np.random.Generator, margin: float = 0.1
                          ) -> list[Candidate]:
    out = []
    for k, idx in enumerate(ctx.sampled):
        vis = ctx.visible_unique(int(idx))
        for a, b in itertools.permutations(vis, 2):
            pa, pb = ctx.camera_extent(int(idx), a), ctx.camera_extent(int(idx), b)
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
            options, letter, _ = mc(label, [high if label == low else low], rng)
            out.append({'question': template, 'options': options, 'answer': letter,
                        'answer_text': label, 'objects': [a.instance_id, b.instance_id],
                        'frames': [int(idx)], 'frame_numbers': [k + 1],
                        'meta': {'subtype': f'{low.lower()}_{high.lower()}'}})
    return out


def _camera_obj_rel_dist(ctx: Context, rng: np.random.Generator) -> list[Candidate]:
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
        options, letter, _ = mc(best, [c for c in names if c != best], rng)
        out.append({'question': ('Measuring from the closest point of each object, which of '
                                 f'these objects ({", ".join(names)}) is the closest to the '
                                 f'camera in {ctx.frame_desc(k)}?'),
                    'options': options, 'answer': letter, 'answer_text': best,
                    'objects': [o.instance_id for o in group], 'frames': [int(idx)],
                    'frame_numbers': [k + 1], 'meta': {'distances': dist}})
    return out


# ------------------------------------------------------------------ official rules


def _camera_obj_abs_dist_official(ctx: Context, rng: np.random.Generator,
                                  min_m: float = 0.2, max_m: float = 10.0) -> list[Candidate]:
    out = []
    for k, idx in enumerate(ctx.sampled):
        cam = ctx.cam_center(int(idx))
        for o in ctx.frame_unique(int(idx)):
            d = box_point_distance(cam, o)
            if not min_m <= d <= max_m:
                continue
            out.append({'question': ('What is the approximate distance (in meters) between the '
                                     'camera (or the person filming) and the nearest point of '
                                     f'the {o.category} in {ctx.frame_desc(k)}?'),
                        'answer': round(d, 1), 'objects': [o.instance_id], 'frames': [int(idx)],
                        'frame_numbers': [k + 1], 'meta': {'exact': d}})
    return out


def _camera_displacement_official(ctx: Context, rng: np.random.Generator,
                                  min_gap: int = 5, max_gap: int = 30, min_m: float = 0.2,
                                  max_m: float = 10.0) -> list[Candidate]:
    out = []
    n = ctx.n_sampled
    for k1 in range(n):
        for k2 in range(k1 + min_gap, min(n, k1 + max_gap + 1)):
            i1, i2 = int(ctx.sampled[k1]), int(ctx.sampled[k2])
            d = float(np.linalg.norm(ctx.cam_center(i2) - ctx.cam_center(i1)))
            if not min_m <= d <= max_m:
                continue
            out.append({'question': ('Approximately how far (in meters) did the camera move '
                                     f'between frame {k1 + 1} and {ctx.frame_desc(k2)}?'),
                        'answer': round(d, 1), 'objects': [], 'frames': [i1, i2],
                        'frame_numbers': [k1 + 1, k2 + 1], 'meta': {'exact': d}})
    return out


def official_movement_label(disp_cam: np.ndarray, threshold: float = 1.0) -> str | None:
    """Return the official movement direction of a displacement in the start camera's
    frame (x right, y down, z forward), or None when neither x nor z moved more than
    ``threshold`` metres; z (forward/backward) wins when both did and |z| >= |x|."""
    dx, dz = float(disp_cam[0]), float(disp_cam[2])
    big_x, big_z = abs(dx) > threshold, abs(dz) > threshold
    if big_z and (not big_x or abs(dz) >= abs(dx)):
        return 'Forward' if dz > 0 else 'Backward'
    if big_x:
        return 'Right' if dx > 0 else 'Left'
    return None


def _camera_movement_direction_official(ctx: Context, rng: np.random.Generator
                                        ) -> list[Candidate]:
    out = []
    for k1, k2 in itertools.combinations(range(ctx.n_sampled), 2):
        i1, i2 = int(ctx.sampled[k1]), int(ctx.sampled[k2])
        disp = ctx.traj.poses[i1, :3, :3].T @ (ctx.cam_center(i2) - ctx.cam_center(i1))
        label = official_movement_label(disp)
        if label is None:
            continue
        options, letter, texts = mc(label, [x for x in DIRECTIONS if x != label], rng)
        question = (f'During the sequence between frame {k1 + 1} and {ctx.frame_desc(k2)}, '
                    "what was the primary consistent direction of the camera's movement "
                    'relative to its orientation at the start? The options are '
                    f'{texts[0]}, {texts[1]}, {texts[2]}, and {texts[3]}.')
        out.append({'question': question, 'options': options, 'answer': letter,
                    'answer_text': label, 'objects': [], 'frames': [i1, i2],
                    'frame_numbers': [k1 + 1, k2 + 1],
                    'meta': {'right_m': float(disp[0]), 'down_m': float(disp[1]),
                             'forward_m': float(disp[2])}})
    return out


_REL_POS_AXES = ((2, 'Near', 'Far', 'nf'), (0, 'Left', 'Right', 'lr'), (1, 'Up', 'Down', 'ud'))


def _rel_pos_question(sub: str, desc: str, a: str, b: str) -> str:
    """Return the VSTI-Bench obj_obj_relative_pos question (template wording, no articles)."""
    if sub == 'nf':
        return f'In {desc}, relative to the camera, is {a} [Near/Far] compared to {b}?'
    pair = '[Left/Right]' if sub == 'lr' else '[Up/Down]'
    return f'In {desc}, relative to {b}, is {a} to the {pair}?'


def _obj_obj_relative_pos_official(ctx: Context, rng: np.random.Generator,
                                   margin: float = 0.15) -> list[Candidate]:
    out = []
    for k, idx in enumerate(ctx.sampled):
        for a, b in itertools.combinations(ctx.frame_unique(int(idx)), 2):
            pa = ctx.camera_extent(int(idx), a, box=True)
            pb = ctx.camera_extent(int(idx), b, box=True)
            for axis, low, high, sub in _REL_POS_AXES:
                if pb[:, axis].min() - pa[:, axis].max() > margin:
                    label = low
                elif pa[:, axis].min() - pb[:, axis].max() > margin:
                    label = high
                else:
                    continue
                options, letter, _ = mc(label, [high if label == low else low], rng)
                out.append({'question': _rel_pos_question(sub, ctx.frame_desc(k), a.category,
                                                          b.category),
                            'options': options, 'answer': letter, 'answer_text': label,
                            'objects': [a.instance_id, b.instance_id], 'frames': [int(idx)],
                            'frame_numbers': [k + 1],
                            'meta': {'subtype': f'{low.lower()}_{high.lower()}',
                                     'question_type': f'obj_obj_relative_pos_{sub}'}})
    return out


def _camera_obj_rel_dist_official(ctx: Context, rng: np.random.Generator,
                                  min_m: float = 0.5, threshold: float = 0.15
                                  ) -> list[Candidate]:
    out = []
    for k, idx in enumerate(ctx.sampled):
        cam = ctx.cam_center(int(idx))
        cands = [(o, round(box_point_distance(cam, o), 2)) for o in ctx.frame_unique(int(idx))]
        cands = sorted((c for c in cands if c[1] >= min_m), key=lambda c: c[1])
        for version, n in ((1, 4), (2, 3), (3, 2)):
            if len(cands) < n:
                continue
            chosen = [cands[0]]
            for i in rng.permutation(len(cands) - 1):
                cand = cands[1 + int(i)]
                if all(abs(cand[1] - c[1]) >= threshold for c in chosen):
                    chosen.append(cand)
                if len(chosen) == n:
                    break
            if len(chosen) < n:
                continue
            best = chosen[0][0].category
            options, letter, texts = mc(best, [o.category for o, _ in chosen[1:]], rng)
            out.append({'question': ('Measuring from the closest point of each object, which of '
                                     f'these objects ({", ".join(texts)}) is the closest to the '
                                     f'camera in {ctx.frame_desc(k)}?'),
                        'options': options, 'answer': letter, 'answer_text': best,
                        'objects': [o.instance_id for o, _ in chosen], 'frames': [int(idx)],
                        'frame_numbers': [k + 1],
                        'meta': {'distances': {o.category: d for o, d in chosen},
                                 'question_type': f'camera_obj_rel_dist_v{version}'}})
    return out


EXACT: dict[str, Generator] = {
    'camera_obj_abs_dist': _camera_obj_abs_dist,
    'camera_displacement': _camera_displacement,
    'camera_movement_direction': _camera_movement_direction,
    'obj_obj_relative_pos': _obj_obj_relative_pos,
    'camera_obj_rel_dist': _camera_obj_rel_dist,
}
OFFICIAL: dict[str, Generator] = {
    'camera_obj_abs_dist': _camera_obj_abs_dist_official,
    'camera_displacement': _camera_displacement_official,
    'camera_movement_direction': _camera_movement_direction_official,
    'obj_obj_relative_pos': _obj_obj_relative_pos_official,
    'camera_obj_rel_dist': _camera_obj_rel_dist_official,
}
