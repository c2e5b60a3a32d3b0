"""Text route steps: derived from a planned path, parsed from model text, and compared.

Conventions: positions are ground-plane coordinates (see
:class:`vlm3r_ros.planning.trajectory_graph.GroundPlane`), angles are counter-clockwise
from plane x seen from above, with the up axis pointing at the viewer. So a positive
heading change is a 'turn left', a negative one a 'turn right', and one larger than 135
degrees either way is a 'turn back'. The step wording follows VSI-Bench route plans
('turn left', 'go forward until the door', 'You have reached the final destination.').
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from vlm3r_ros.planning.trajectory_graph import wrap_angle

FINAL_STEP = 'You have reached the final destination.'
TURN_LEFT = 'turn left'
TURN_RIGHT = 'turn right'
TURN_BACK = 'turn back'
PLACEHOLDER = '[please fill in]'

_TURN_BACK_RAD = math.radians(135.0)


def turn_word(delta_rad: float) -> str:
    """Return 'turn left' / 'turn right' / 'turn back' for a heading change (CCW positive)."""
    delta = wrap_angle(delta_rad)
    if abs(delta) > _TURN_BACK_RAD:
        return TURN_BACK
    return TURN_LEFT if delta > 0.0 else TURN_RIGHT


@dataclass(frozen=True)
class _Leg:
    """A straight-ish stretch of path: chord heading, length along the path, end points."""

    heading_rad: float
    length_m: float
    start_xy: np.ndarray
    end_xy: np.ndarray


def _legs(xy: np.ndarray, threshold_rad: float) -> list[_Leg]:
    """Split a polyline into legs wherever it bends by at least ``threshold_rad``.

    A segment is compared with the chord of the leg so far (start of leg to current point),
    which merges collinear runs and tolerates small zig-zags without drifting.
    """
    legs: list[_Leg] = []
    leg_start = xy[0]
    length = 0.0
    for a, b in zip(xy[:-1], xy[1:]):
        seg = b - a
        seg_heading = math.atan2(seg[1], seg[0])
        if length > 0.0:
            chord = a - leg_start
            if abs(wrap_angle(seg_heading - math.atan2(chord[1], chord[0]))) >= threshold_rad:
                legs.append(_Leg(math.atan2(chord[1], chord[0]), length, leg_start, a))
                leg_start, length = a, 0.0
        length += float(np.linalg.norm(seg))
    if length > 0.0:
        chord = xy[-1] - leg_start
        legs.append(_Leg(math.atan2(chord[1], chord[0]), length, leg_start, xy[-1]))
    # Chord headings of neighbouring legs may end up closer than the threshold; merge them.
    merged: list[_Leg] = []
    for leg in legs:
        if merged and abs(wrap_angle(leg.heading_rad - merged[-1].heading_rad)) < threshold_rad:
            prev = merged.pop()
            chord = leg.end_xy - prev.start_xy
            leg = _Leg(math.atan2(chord[1], chord[0]), prev.length_m + leg.length_m,
                       prev.start_xy, leg.end_xy)
        merged.append(leg)
    return merged


def _landmark_near(point: np.ndarray, landmarks: Sequence[tuple[str, ArrayLike]],
                   radius_m: float) -> str | None:
    """Return the name of the landmark nearest ``point`` within ``radius_m``, else None."""
    best_name, best_dist = None, radius_m
    for name, pos in landmarks:
        d = float(np.linalg.norm(np.asarray(pos, dtype=np.float64).reshape(-1)[:2] - point))
        if d <= best_dist:
            best_name, best_dist = name, d
    return best_name


def steps_from_path(positions: ArrayLike, start_heading_rad: float | None,
                    turn_threshold_deg: float = 45.0,
                    landmarks: Sequence[tuple[str, ArrayLike]] | None = None, *,
                    landmark_radius_m: float = 1.0, min_segment_m: float = 0.05) -> list[str]:
    """Return VSI-style text steps that follow a path.

    ``positions`` is (N, 2) or (N, 3) plane coordinates (only the first two columns are
    used). ``start_heading_rad`` is the robot's heading at the start; None means it already
    faces the first leg. Points closer than ``min_segment_m`` to the previous one are
    dropped (jitter). Each leg yields an optional turn and 'go forward D m' (D along the
    path, 0.1 m resolution) with ' until NAME' when a landmark ``(NAME, position)`` lies
    within ``landmark_radius_m`` of the leg's end. The last step is :data:`FINAL_STEP`.
    Raises ValueError on a bad shape or a threshold outside (0, 180).
    """
    pts = np.asarray(positions, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] not in (2, 3) or pts.shape[0] == 0:
        raise ValueError(f'positions must have shape (N, 2) or (N, 3), got {pts.shape}')
    if not 0.0 < turn_threshold_deg < 180.0:
        raise ValueError('turn_threshold_deg must be in (0, 180)')
    xy = pts[:, :2]
    kept = [xy[0]]
    for p in xy[1:]:
        if float(np.linalg.norm(p - kept[-1])) >= min_segment_m:
            kept.append(p)
    if len(kept) > 1 and float(np.linalg.norm(xy[-1] - kept[-1])) > 0.0:
        kept[-1] = xy[-1]  # keep the exact destination
    steps: list[str] = []
    threshold = math.radians(turn_threshold_deg)
    heading = start_heading_rad
    for leg in _legs(np.stack(kept), threshold) if len(kept) > 1 else []:
        if heading is not None and abs(wrap_angle(leg.heading_rad - heading)) >= threshold:
            steps.append(turn_word(leg.heading_rad - heading))
        heading = leg.heading_rad
        step = f'go forward {round(leg.length_m, 1):.1f} m'
        name = _landmark_near(leg.end_xy, landmarks or (), landmark_radius_m)
        steps.append(step if name is None else f'{step} until {name}')
    steps.append(FINAL_STEP)
    return steps


# '1.' / '2)' step markers; the look-ahead keeps decimals such as '2.5 m' intact.
_MARKER = re.compile(r'(?:^|\s)\d{1,2}[.)](?=\s|[A-Za-z\[])')
_OPTION_LETTER = re.compile(r'^\s*\(?[A-Da-d][.)]\s+')
_SEPARATORS = re.compile(r'[,;\n]|\.(?=\s|$)|\s+(?:and\s+)?then\s+|\s+and\s+(?=(?:turn|go)\b)',
                         re.IGNORECASE)
_FINAL = re.compile(r'^(?:you\s+have\s+)?reached\s+(?:the\s+)?(?:final\s+)?destination$')
_TURN = re.compile(r'\bturn\s+(left|right|back|around)\b')


def _normalise_step(piece: str) -> str | None:
    """Return the canonical form of one step phrase, or None if it is empty."""
    s = ' '.join(piece.lower().split()).strip(' .:!\'"`*')
    if not s:
        return None
    if _FINAL.match(s):
        return FINAL_STEP
    if 'please fill in' in s:
        return PLACEHOLDER
    s = re.sub(r'\b(?:turn\s+around|u-?turn)\b', TURN_BACK, s)
    return s


def parse_route_steps(text: str) -> list[str]:
    """Return the steps in model text such as '1. turn left 2. Go forward until the door'.

    Accepts numbered lists (any preamble before the first number is dropped), option-style
    comma lists ('Turn Back, Turn Left') and sentences. Steps are lower-cased with single
    spaces; 'turn around'/'u-turn' become 'turn back'; the final sentence becomes
    :data:`FINAL_STEP`; unfilled blanks become :data:`PLACEHOLDER`.
    """
    body = _OPTION_LETTER.sub('', text, count=1)
    chunks = _MARKER.split(body)
    if len(chunks) > 1:
        chunks = chunks[1:]
    steps = []
    for chunk in chunks:
        for piece in _SEPARATORS.split(chunk):
            step = _normalise_step(piece) if piece else None
            if step is not None:
                steps.append(step)
    return steps


def turn_sequence(steps: Sequence[str]) -> list[str]:
    """Return the turns in ``steps`` as 'left' / 'right' / 'back', in order."""
    turns = []
    for step in steps:
        for match in _TURN.finditer(step.lower()):
            word = match.group(1)
            turns.append('back' if word == 'around' else word)
    return turns


def _edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Return the Levenshtein distance between two token sequences."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


@dataclass(frozen=True)
class StepAgreement:
    """How well two step lists agree on their turns.

    ``agree`` is True when the turn sequences are identical; ``score`` is
    ``1 - edit_distance / max(len)`` over the turn sequences (1.0 when both have none).
    """

    agree: bool
    score: float
    path_turns: tuple[str, ...]
    model_turns: tuple[str, ...]


def steps_agree(path_steps: Sequence[str], model_steps: Sequence[str] | str) -> StepAgreement:
    """Compare the turn sequences of path-derived steps and model steps (or model text)."""
    if isinstance(model_steps, str):
        model_steps = parse_route_steps(model_steps)
    a, b = turn_sequence(path_steps), turn_sequence(model_steps)
    longest = max(len(a), len(b))
    score = 1.0 if longest == 0 else 1.0 - _edit_distance(a, b) / longest
    return StepAgreement(agree=a == b, score=score, path_turns=tuple(a), model_turns=tuple(b))
