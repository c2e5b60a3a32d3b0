"""VSI-Bench task generators for :func:`vlm3r_ros.eval.qa.generate_qa`.

Each task has an ``official`` generator, following the rules of the official QA generators
(VLM-3R ``vlm_3r_data_process/src/tasks/vsibench``, derived from thinking-in-space's
VSI-Bench pipeline), and an ``exact`` generator (this package's earlier rules: exact prism
geometry, its own ambiguity margins). Tasks whose rules agree share one generator. What
the official rules do, and where ``exact`` differs:

* every distance is measured between oriented boxes: a cylinder counts as the square prism
  around it (``exact``: the true cylinder);
* ``object_abs_distance``: pairs of single-instance objects, dropped when the rounded
  distance is under 0.2 m (``exact``: under 0.3 m);
* ``object_rel_distance``: always four choices (categories, measured to their closest
  instance) for a single-instance primary object; dropped when the closest is under
  0.15 m or any two choices lie within 0.15 m of each other; the question lists the
  choices in option order and adds the template's multiple-instance sentence
  (``exact``: 2-4 choices, only the two closest must differ by 0.15 m);
* relative direction: triples of single-instance objects whose pairwise box distances all
  lie in 0.3-5 m, asked in three role orders (a,b,c), (a,c,b), (b,a,c); the angle is taken
  counter-clockwise from the facing direction, for the queried object's centre and its 8
  box corners, and a question is dropped when more than two corners fall in another sector
  than the centre. Sectors: hard = quadrants (dropped within 10 degrees below each
  quadrant's counter-clockwise end, as the official code does), medium = left [0, 135),
  back [135, 225), right [225, 360), easy = the same with the back sector dropped; medium
  and easy drop angles within 10 degrees of a sector boundary (``exact``: every role
  order, centres only, symmetric margins, easy asks the back half as left/right);
* ``obj_appearance_order``: first-appearance times rounded to whole seconds must differ
  pairwise by more than 1 s (``exact``: sorted raw times at least 1 s apart).

Counting, object size, room size and route planning follow the same rules in both modes
(route planning has no official generator: VSI-Bench's route plans were written by hand).
"""
from __future__ import annotations

import itertools
from typing import Callable

import numpy as np

from vlm3r_ros.eval.qa_common import (Candidate, Context, box_distance, ccw_angle, mc,
                                      signed_angle)
from vlm3r_ros.eval.scenes import SceneObject, object_distance

Generator = Callable[[Context, np.random.Generator], list[Candidate]]

ROUTE_NOTE = ("(Note: for each [please fill in], choose either 'turn back,' 'turn left,' "
              "or 'turn right.')")
TURN_NAMES = {'left': 'Turn Left', 'right': 'Turn Right', 'back': 'Turn Back'}
REL_DISTANCE_NOTE = ('If there are multiple instances of an object category, measure to the '
                     'closest.')


def _counting(ctx: Context, rng: np.random.Generator) -> list[Candidate]:
    out = []
    for cat in ctx.full_cats:
        n = len(ctx.scene.instances(cat))
        if n >= 2:  # VSI-Bench asks about categories with several instances
            out.append({'question': f'How many {cat}(s) are in this room?', 'answer': n,
                        'objects': [o.instance_id for o in ctx.scene.instances(cat)]})
    return out


def _abs_distance(ctx: Context, rng: np.random.Generator) -> list[Candidate]:
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


def _size(ctx: Context, rng: np.random.Generator) -> list[Candidate]:
    return [{'question': ('What is the length of the longest dimension (length, width, or '
                          f'height) of the {o.category}, measured in centimeters?'),
             'answer': int(round(o.longest_dimension * 100.0)), 'objects': [o.instance_id],
             'meta': {'exact': o.longest_dimension * 100.0}} for o in ctx.unique]


def _room_size(ctx: Context, rng: np.random.Generator) -> list[Candidate]:
    return [{'question': ('What is the size of this room (in square meters)?\n'
                          'If multiple rooms are shown, estimate the size of the combined space.'),
             'answer': round(ctx.scene.area, 1), 'objects': [],
             'meta': {'exact': ctx.scene.area}}]


def _rel_distance(ctx: Context, rng: np.random.Generator) -> list[Candidate]:
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
            options, letter, texts = mc(best, [c for c in cands if c != best], rng)
            out.append({'question': ('Measuring from the closest point of each object, which '
                                     f'of these objects ({", ".join(listed)}) is the closest '
                                     f'to the {primary.category}?'),
                        'options': options, 'answer': letter, 'answer_text': best,
                        'objects': [primary.instance_id]
                        + [o.instance_id for c in cands for o in ctx.scene.instances(c)],
                        'meta': {'distances': {c: dist[c] for c in cands}}})
            break
    return out


def _direction_question(level: str, a: SceneObject, b: SceneObject, c: SceneObject) -> str:
    """Return the VSI-Bench relative-direction question: standing by ``a``, facing ``b``,
    where is ``c`` (easy: left/right; medium: left/right/back; hard: quadrants)."""
    head = (f'If I am standing by the {a.category} and facing the {b.category}, '
            f'is the {c.category} to ')
    if level == 'easy':
        return head + f'the left or the right of the {b.category}?'
    if level == 'medium':
        return head + ('my left, right, or back?\nAn object is to my back if I would have '
                       'to turn at least 135 degrees in order to face it.')
    return head + ('my front-left, front-right, back-left, or back-right?\nThe '
                   'directions refer to the quadrants of a Cartesian plane (if I am '
                   'standing at the origin and facing along the positive y-axis).')


DIRECTION_CHOICES: dict[str, list[str]] = {
    'easy': ['left', 'right'], 'medium': ['left', 'right', 'back'],
    'hard': ['front-left', 'front-right', 'back-left', 'back-right']}


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


def _rel_direction(level: str) -> Callable[[Context, np.random.Generator], list[Candidate]]:
    choices = DIRECTION_CHOICES[level]

    def gen(ctx: Context, rng: np.random.Generator) -> list[Candidate]:
        out = []
        for a, b, c in itertools.permutations(ctx.unique, 3):
            pa, pb, pc = (np.array(o.center[:2]) for o in (a, b, c))
            fwd, vec = pb - pa, pc - pa
            if np.linalg.norm(fwd) < 0.5 or np.linalg.norm(vec) < 0.5:
                continue
            label = _direction_label(level, signed_angle(fwd, vec))
            if label is None:
                continue
            q = _direction_question(level, a, b, c)
            options, letter, _ = mc(label, [x for x in choices if x != label], rng)
            out.append({'question': q, 'options': options, 'answer': letter,
                        'answer_text': label,
                        'objects': [a.instance_id, b.instance_id, c.instance_id],
                        'meta': {'angle_deg': signed_angle(fwd, vec)}})
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


def _route_planning(ctx: Context, rng: np.random.Generator) -> list[Candidate]:
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
            turn = _turn(signed_angle(heading, leg))
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
        options, letter, _ = mc(correct, pick_alt, rng)
        out.append({'question': question, 'options': options, 'answer': letter,
                    'answer_text': correct,
                    'objects': [start.instance_id, facing.instance_id]
                    + [o.instance_id for o in route], 'meta': {'turns': turns}})
        if len(out) >= 24:
            break
    return out


def _first_appearances(ctx: Context) -> tuple[dict[str, float], dict[str, int]]:
    """Return each visible category's first time (s) and first frame index."""
    first: dict[str, float] = {}
    first_idx: dict[str, int] = {}
    for cat in ctx.scene.counts():
        cols = [o.instance_id for o in ctx.scene.instances(cat)]
        frames = np.nonzero(ctx.vis[:, cols].any(axis=1))[0]
        if frames.size:
            first_idx[cat] = int(frames[0])
            first[cat] = float(ctx.traj.times[frames[0]])
    return first, first_idx


def _appearance_item(ctx: Context, rng: np.random.Generator, four: tuple[str, ...],
                     first: dict[str, float], first_idx: dict[str, int]) -> Candidate:
    """Return the appearance-order item of the categories ``four`` (3 wrong orders drawn)."""
    order = sorted(four, key=lambda c: first[c])
    correct = ', '.join(order)
    perms = [', '.join(p) for p in itertools.permutations(order) if list(p) != order]
    distract = [perms[i] for i in rng.permutation(len(perms))[:3]]
    listed = [four[i] for i in rng.permutation(4)]
    options, letter, _ = mc(correct, distract, rng)
    return {'question': ('What will be the first-time appearance order of the following '
                         f'categories in the video: {", ".join(listed)}?'),
            'options': options, 'answer': letter, 'answer_text': correct,
            'objects': [o.instance_id for c in four for o in ctx.scene.instances(c)],
            'frames': [first_idx[c] for c in order],
            'meta': {'first_seen_s': {c: first[c] for c in order}}}


def _appearance_order(ctx: Context, rng: np.random.Generator, min_gap_s: float = 1.0
                      ) -> list[Candidate]:
    first, first_idx = _first_appearances(ctx)
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
        out.append(_appearance_item(ctx, rng, four, first, first_idx))
    return out


# ------------------------------------------------------------------ official rules


def _abs_distance_official(ctx: Context, rng: np.random.Generator) -> list[Candidate]:
    out = []
    for a, b in itertools.combinations(ctx.unique, 2):
        d = box_distance(a, b)
        if round(d, 1) < 0.2:
            continue
        first, second = (a, b) if rng.random() < 0.5 else (b, a)
        out.append({'question': ('Measuring from the closest point of each object, what is the '
                                 f'direct distance between the {first.category} and the '
                                 f'{second.category} (in meters)?'),
                    'answer': round(d, 1), 'objects': [first.instance_id, second.instance_id],
                    'meta': {'exact': d}})
    return out


def _rel_distance_official(ctx: Context, rng: np.random.Generator,
                           threshold: float = 0.15) -> list[Candidate]:
    out = []
    for primary in ctx.unique:
        others = [c for c in ctx.full_cats if c != primary.category]
        dist = {c: min(box_distance(primary, o) for o in ctx.scene.instances(c))
                for c in others}
        for combo in itertools.combinations(others, 4):
            ds = [dist[c] for c in combo]
            if min(ds) < threshold:
                continue
            if any(abs(x - y) <= threshold for x, y in itertools.combinations(ds, 2)):
                continue
            best = combo[int(np.argmin(ds))]
            options, letter, texts = mc(best, [c for c in combo if c != best], rng)
            out.append({'question': ('Measuring from the closest point of each object, which '
                                     f'of these objects ({", ".join(texts)}) is the closest '
                                     f'to the {primary.category}?\n{REL_DISTANCE_NOTE}'),
                        'options': options, 'answer': letter, 'answer_text': best,
                        'objects': [primary.instance_id]
                        + [o.instance_id for c in combo for o in ctx.scene.instances(c)],
                        'meta': {'distances': {c: dist[c] for c in combo}}})
    return out


_SECTOR_BOUNDS = (0.0, 135.0, 225.0, 360.0)


def _sector(level: str, angle: float) -> int:
    """Return the official sector of a counter-clockwise angle in [0, 360): the quadrant
    0-3 for 'hard', else 1 (left), 2 (back) or 3 (right)."""
    if level == 'hard':
        return int(angle // 90.0)
    return int(np.digitize(angle, _SECTOR_BOUNDS))


def official_direction_label(level: str, angle: float, corner_angles: np.ndarray
                             ) -> str | None:
    """Return the official relative-direction answer, or None when the official rules drop
    the question. ``angle`` is the queried centre's counter-clockwise angle (deg) from the
    facing direction, ``corner_angles`` those of its 8 box corners."""
    sector = _sector(level, angle)
    if sum(_sector(level, float(a)) != sector for a in corner_angles) > 2:
        return None
    if level == 'hard':
        if 90.0 - angle % 90.0 < 10.0:
            return None
        return ('front-left', 'back-left', 'back-right', 'front-right')[sector]
    if min(abs(angle - b) for b in _SECTOR_BOUNDS) < 10.0:
        return None
    if sector == 2:
        return 'back' if level == 'medium' else None
    return 'left' if sector == 1 else 'right'


def _rel_direction_official(level: str, min_dist: float = 0.3, max_dist: float = 5.0
                            ) -> Generator:
    choices = DIRECTION_CHOICES[level]

    def gen(ctx: Context, rng: np.random.Generator) -> list[Candidate]:
        out = []
        for triple in itertools.combinations(ctx.unique, 3):
            if any(not min_dist <= box_distance(x, y) <= max_dist
                   for x, y in itertools.combinations(triple, 2)):
                continue
            t0, t1, t2 = triple
            for a, b, c in ((t0, t1, t2), (t0, t2, t1), (t1, t0, t2)):
                pa = np.array(a.center[:2])
                fwd = np.array(b.center[:2]) - pa
                angle = ccw_angle(fwd, np.array(c.center[:2]) - pa)
                corners = [ccw_angle(fwd, p[:2] - pa) for p in c.bounding_corners()]
                label = official_direction_label(level, angle, np.array(corners))
                if label is None:
                    continue
                options, letter, _ = mc(label, [x for x in choices if x != label], rng)
                out.append({'question': _direction_question(level, a, b, c),
                            'options': options, 'answer': letter, 'answer_text': label,
                            'objects': [a.instance_id, b.instance_id, c.instance_id],
                            'meta': {'angle_ccw_deg': angle}})
        return out
    return gen


def _appearance_order_official(ctx: Context, rng: np.random.Generator, margin_s: int = 1
                               ) -> list[Candidate]:
    first, first_idx = _first_appearances(ctx)
    seconds = {c: round(t) for c, t in first.items()}
    out: list[Candidate] = []
    for four in itertools.combinations(sorted(first), 4):
        if any(abs(seconds[x] - seconds[y]) <= margin_s
               for x, y in itertools.combinations(four, 2)):
            continue
        out.append(_appearance_item(ctx, rng, four, first, first_idx))
    return out


EXACT: dict[str, Generator] = {
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
}
OFFICIAL: dict[str, Generator] = {
    **EXACT,
    'object_abs_distance': _abs_distance_official,
    'object_rel_distance': _rel_distance_official,
    'object_rel_direction_easy': _rel_direction_official('easy'),
    'object_rel_direction_medium': _rel_direction_official('medium'),
    'object_rel_direction_hard': _rel_direction_official('hard'),
    'obj_appearance_order': _appearance_order_official,
}
