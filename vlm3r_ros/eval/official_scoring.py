"""The official VSI-Bench and VSTI-Bench scoring rules, implemented independently.

What the two official evaluators do (thinking-in-space ``lmms_eval/tasks/vsibench/utils.py``
for VSI-Bench; VLM-3R ``thinking-in-space/lmms_eval/tasks/vstibench/utils.py`` for
VSTI-Bench), as facts this module reproduces:

* **Parser** (:func:`official_token`): the prediction is split on the single space
  character only and the first piece kept; every trailing '.' of that piece is removed;
  then surrounding whitespace is stripped. So a leading space gives an empty token, a
  newline does not split ('A\\nB' stays one token), and 'A.\\n' keeps its dot (the dots
  are stripped before the newline is). The model's decoded text is ``.strip()``-ed
  before it reaches the parser.
* **Multiple choice**: 1 when the token equals the ground-truth letter case-insensitively
  (``str.lower``), else 0. VSI-Bench's ground truth is the ``ground_truth`` column,
  VSTI-Bench's the ``mc_answer`` column. Any token is compared, valid letter or not.
* **Numbers**: the token and the ground truth go through ``float()`` (None when it
  raises: 'nan', 'inf', '1e3', '1_000' and ' 3 ' are all accepted by ``float``). A None
  scores 0. Otherwise MRA = mean over the 10 thresholds ``linspace(0.5, 0.95, 10)`` of
  ``|pred - gt| / gt <= 1 - t`` in float64, dividing by the *signed* ground truth (a
  negative ground truth passes every threshold; zero raises ZeroDivisionError). NaN and
  infinite predictions fail every threshold.
* **Per question type**: the mean of its items' scores.
* **VSI-Bench overall**: the mean over question types, after the three relative-direction
  levels are replaced by their plain mean (8 entries with every task present). The
  thinking-in-space aggregation does that replacement only when the 'easy' level is
  present, and then raises KeyError when 'medium' or 'hard' is absent; when 'easy' is
  absent the levels present stay separate entries of the overall. VLM-3R's copy of the
  VSI-Bench task instead averages whichever levels are present.
* **VSTI-Bench overall**: the mean over every question type present, with
  ``obj_obj_relative_pos_{nf,lr,ud}`` and ``camera_obj_rel_dist_v{1,2,3}`` (4, 3 and 2
  options) kept separate. There is no official number that averages the two benchmarks.

Unknown question types raise ValueError in both evaluators, and here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from vlm3r_ros.pipeline.answers import official_first_token

VSI_MC_TYPES: tuple[str, ...] = (
    'object_rel_direction_easy', 'object_rel_direction_medium', 'object_rel_direction_hard',
    'object_rel_distance', 'route_planning', 'obj_appearance_order')
VSI_NUMBER_TYPES: tuple[str, ...] = (
    'object_abs_distance', 'object_counting', 'object_size_estimation', 'room_size_estimation')
VSTI_MC_TYPES: tuple[str, ...] = (
    'obj_obj_relative_pos_nf', 'obj_obj_relative_pos_ud', 'obj_obj_relative_pos_lr',
    'camera_obj_rel_dist_v1', 'camera_obj_rel_dist_v2', 'camera_obj_rel_dist_v3',
    'camera_movement_direction')
VSTI_NUMBER_TYPES: tuple[str, ...] = (
    'camera_obj_abs_dist', 'camera_displacement', 'camera_obj_dist_change')
DIRECTION_LEVELS: tuple[str, ...] = (
    'object_rel_direction_easy', 'object_rel_direction_medium', 'object_rel_direction_hard')
DIRECTION_GROUP = 'object_rel_direction'
# VSI-Bench's table order (the thinking-in-space report lists the tasks in this order).
VSI_GROUP_ORDER: tuple[str, ...] = (
    'object_counting', 'object_abs_distance', 'object_size_estimation', 'room_size_estimation',
    'object_rel_distance', DIRECTION_GROUP, 'route_planning', 'obj_appearance_order')
VSTI_ORDER: tuple[str, ...] = (
    'camera_obj_abs_dist', 'camera_displacement', 'camera_obj_dist_change',
    'camera_movement_direction', 'obj_obj_relative_pos_nf', 'obj_obj_relative_pos_lr',
    'obj_obj_relative_pos_ud', 'camera_obj_rel_dist_v1', 'camera_obj_rel_dist_v2',
    'camera_obj_rel_dist_v3')
BENCHMARK_TYPES: dict[str, tuple[str, ...]] = {
    'VSI-Bench': VSI_MC_TYPES + VSI_NUMBER_TYPES,
    'VSTI-Bench': VSTI_MC_TYPES + VSTI_NUMBER_TYPES,
}
MC_TYPES: frozenset[str] = frozenset(VSI_MC_TYPES + VSTI_MC_TYPES)
NUMBER_TYPES: frozenset[str] = frozenset(VSI_NUMBER_TYPES + VSTI_NUMBER_TYPES)
# The thresholds: 10 points from 0.5 to 0.95 (the evaluators derive the count from
# (0.95 - 0.5) / 0.05 + 2 truncated to an int, which is 10).
OFFICIAL_THRESHOLDS: np.ndarray = np.linspace(0.5, 0.95, 10)
# Our pooled synthetic task names and how their items map to official sub-types.
_POOLED_SUBTYPES = {'near_far': 'nf', 'left_right': 'lr', 'up_down': 'ud',
                    'nf': 'nf', 'lr': 'lr', 'ud': 'ud'}
_REL_DIST_VERSION_BY_OPTIONS = {4: 'v1', 3: 'v2', 2: 'v3'}


def benchmark_of(question_type: str) -> str | None:
    """Return 'VSI-Bench' or 'VSTI-Bench' for an official question type, else None."""
    for bench, types in BENCHMARK_TYPES.items():
        if question_type in types:
            return bench
    return None


def official_question_type(task: str, options: Sequence[str] = (),
                           meta: Mapping[str, Any] | None = None) -> str:
    """Return the official question type of an item of ``task``.

    Official names pass through. Our pooled synthetic tasks are split as the official
    data is: ``obj_obj_relative_pos`` by its axis (``meta['subtype']`` 'near_far',
    'left_right', 'up_down' -> _nf, _lr, _ud) and ``camera_obj_rel_dist`` by its option
    count (4, 3, 2 -> _v1, _v2, _v3, the official versions' choice counts). A
    ``meta['question_type']`` wins when it is set. Anything else is returned unchanged.
    """
    meta = meta or {}
    explicit = meta.get('question_type')
    if isinstance(explicit, str) and explicit:
        return explicit
    if task == 'obj_obj_relative_pos':
        sub = _POOLED_SUBTYPES.get(str(meta.get('subtype', '')))
        return f'{task}_{sub}' if sub else task
    if task == 'camera_obj_rel_dist':
        version = meta.get('version') or _REL_DIST_VERSION_BY_OPTIONS.get(len(options))
        return f'{task}_{version}' if version else task
    return task


def official_token(prediction: str) -> str:
    """Return the token the official evaluators read from ``prediction`` (see module doc);
    the node's reference protocol parses with the same function."""
    return official_first_token(prediction)


def official_float(text: Any) -> float | None:
    """Return ``float(text)``, or None when ``float`` raises (the evaluators' ``to_float``)."""
    try:
        return float(text)
    except (TypeError, ValueError, OverflowError):
        return None


def official_exact_match(token: str, target: str) -> float:
    """Return 1.0 when ``token`` equals ``target`` ignoring case (``str.lower``), else 0.0."""
    return 1.0 if token.lower() == str(target).lower() else 0.0


def official_mra(pred: float | None, target: float | None) -> float:
    """Return the official MRA; 0.0 when either side is None (the evaluators catch the
    TypeError). Divides by the signed ``target``; raises ZeroDivisionError for 0."""
    if pred is None or target is None:
        return 0.0
    relative = abs(pred - target) / target  # Python floats: 0 raises ZeroDivisionError
    return float(np.mean(relative <= 1.0 - OFFICIAL_THRESHOLDS))


def official_item_score(question_type: str, prediction: str, target: Any) -> float:
    """Return one item's official score: exact letter match or MRA by question type.

    ``target`` is the letter (multiple choice) or the ground truth as given (numbers).
    Raises ValueError for a question type neither evaluator knows.
    """
    token = official_token(prediction)
    if question_type in MC_TYPES:
        return official_exact_match(token, str(target))
    if question_type in NUMBER_TYPES:
        return official_mra(official_float(token), official_float(target))
    raise ValueError(f'unknown question type {question_type!r} (the official evaluators '
                     'raise on it too)')


@dataclass
class OfficialOverall:
    """One benchmark's official aggregate.

    ``entries`` are the values the official overall averages (question types, with the
    VSI-Bench direction levels merged when the rule merges them); ``overall`` is None when
    the official aggregation raises, ``notes`` say why and what the alternatives give.
    """

    benchmark: str
    entries: dict[str, float]
    overall: float | None
    rule: str
    notes: list[str] = field(default_factory=list)
    vlm3r_copy_overall: float | None = None


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values))


def vsibench_overall(type_scores: Mapping[str, float]) -> OfficialOverall:
    """Return VSI-Bench's overall from per-question-type scores, as thinking-in-space.

    Also gives VLM-3R's copy's value (direction levels present averaged) in
    ``vlm3r_copy_overall`` and a note whenever the two differ in how they treat a
    missing direction level.
    """
    entries = dict(type_scores)
    levels = [lvl for lvl in DIRECTION_LEVELS if lvl in entries]
    missing = [lvl for lvl in DIRECTION_LEVELS if lvl not in entries]
    notes: list[str] = []
    copy_entries = {k: v for k, v in entries.items() if k not in DIRECTION_LEVELS}
    if levels:
        copy_entries[DIRECTION_GROUP] = _mean([entries[lvl] for lvl in levels])
    copy_overall = _mean(list(copy_entries.values())) if copy_entries else None
    overall: float | None
    if DIRECTION_LEVELS[0] in entries:
        if missing:
            notes.append(
                f'relative direction level(s) {", ".join(missing)} missing: the official '
                'thinking-in-space aggregation raises KeyError here, so there is no official '
                f'VSI-Bench overall; VLM-3R\'s copy averages the {len(levels)} level(s) present '
                f'(overall {100 * copy_overall:.2f})')
            overall = None
        else:
            merged = {k: v for k, v in entries.items() if k not in DIRECTION_LEVELS}
            merged[DIRECTION_GROUP] = _mean([entries[lvl] for lvl in DIRECTION_LEVELS])
            entries = merged
            overall = _mean(list(entries.values()))
    else:
        overall = _mean(list(entries.values())) if entries else None
        if levels:
            notes.append(
                f'relative direction level easy missing: the official aggregation then '
                f'counts {", ".join(levels)} as separate tasks of the overall (VLM-3R\'s copy '
                f'averages them into one: overall {100 * copy_overall:.2f})')
    return OfficialOverall('VSI-Bench', entries, overall, 'thinking-in-space vsibench', notes,
                           copy_overall)


def vstibench_overall(type_scores: Mapping[str, float]) -> OfficialOverall:
    """Return VSTI-Bench's overall: the mean over every question type present (VLM-3R)."""
    entries = dict(type_scores)
    overall = _mean(list(entries.values())) if entries else None
    notes = []
    absent = [t for t in VSTI_ORDER if t not in entries and t != 'camera_obj_dist_change']
    if absent and entries:
        notes.append(f'VSTI-Bench question types absent from this set: {", ".join(absent)} '
                     '(the overall averages the types present, as the official one does)')
    return OfficialOverall('VSTI-Bench', entries, overall, 'VLM-3R vstibench', notes, overall)


def official_overall(benchmark: str, type_scores: Mapping[str, float]) -> OfficialOverall:
    """Return the official aggregate of ``benchmark`` ('VSI-Bench' or 'VSTI-Bench').

    Raises ValueError for another benchmark or a question type it does not know.
    """
    known = BENCHMARK_TYPES.get(benchmark)
    if known is None:
        raise ValueError(f'no official aggregation for benchmark {benchmark!r}')
    unknown = sorted(set(type_scores) - set(known))
    if unknown:
        raise ValueError(f'{benchmark} has no question type(s) {unknown}')
    for name, value in type_scores.items():
        if not math.isfinite(value):
            raise ValueError(f'score of {name} is not finite: {value!r}')
    if benchmark == 'VSI-Bench':
        return vsibench_overall(type_scores)
    return vstibench_overall(type_scores)
