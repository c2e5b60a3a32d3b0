"""Ground-truth spatial questions for a synthetic scene and camera trajectory.

Every VSI-Bench task and the five VSTI-Bench (VLM-3R) camera tasks, phrased with the
benchmarks' question templates and 'A. ...' option labels, with answers computed from
the scene geometry. Questions only mention objects the camera actually saw (pixel
counts of instance-id renders at reduced resolution).

Which questions are kept follows one of two rule sets, chosen by ``generate_qa(...,
rules=...)``:

* ``'official'`` (default): the filters of the official generators (VLM-3R
  ``vlm_3r_data_process``, whose VSI-Bench part follows thinking-in-space's VSI-Bench
  pipeline): oriented-box distances (a cylinder is measured through its box), four-choice
  relative distance, the 0.3-5 m triple filter and the official sectors for relative
  direction, frame gaps of 5-30 for displacement, camera-frame movement direction over
  1.0 m, a 0.15 m box-corner margin for object-object position, frame-level uniqueness
  for frame questions and the templates' exact wording. The item-by-item rules are in
  :mod:`vlm3r_ros.eval.qa_tasks_vsi` and :mod:`vlm3r_ros.eval.qa_tasks_vsti`.
* ``'exact'``: this package's earlier generator, kept unchanged (same items for the same
  seed): exact prism and cylinder geometry and its own, more symmetric ambiguity margins
  (near ties, angles near any category boundary, hulls fully in front of the camera).
  Use it where geometric exactness matters more than matching the benchmarks.

Both compute the answers from the true geometry and the true camera centre. Answer
conventions follow VSI-Bench: counts are integers, object sizes are integer centimetres
(longest dimension), distances and areas are rounded to 0.1; multiple-choice answers are
the option letter. VSTI-Bench frame references ("frame k of N") index the N frames sampled
uniformly from the trajectory by :func:`sample_frame_indices`; each item also carries the
trajectory frame indices and times it refers to.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from vlm3r_ros.eval import qa_tasks_vsi, qa_tasks_vsti
from vlm3r_ros.eval.qa_common import (LETTERS, RULES, Candidate, Context, Visibility,
                                      compute_visibility, label_options,
                                      sample_frame_indices)
from vlm3r_ros.eval.qa_tasks_vsi import ROUTE_NOTE, TURN_NAMES
from vlm3r_ros.eval.scenes import Scene, Trajectory

__all__ = ['ALL_TASKS', 'LETTERS', 'NUMERIC_TASKS', 'QAItem', 'ROUTE_NOTE', 'RULES',
           'TASK_BENCHMARK', 'TURN_NAMES', 'VSI_TASKS', 'VSTI_TASKS', 'Visibility',
           'compute_visibility', 'generate_qa', 'label_options', 'load_qa', 'qa_document',
           'sample_frame_indices', 'save_qa']

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


_GENERATORS: dict[str, dict[str, Callable[[Context, np.random.Generator], list[Candidate]]]] = {
    'official': {**qa_tasks_vsi.OFFICIAL, **qa_tasks_vsti.OFFICIAL},
    'exact': {**qa_tasks_vsi.EXACT, **qa_tasks_vsti.EXACT},
}


def generate_qa(scene: Scene, trajectory: Trajectory, K: np.ndarray, width: int, height: int,
                seed: int = 0, tasks: Iterable[str] = ALL_TASKS, max_per_task: int = 4,
                num_frames: int = 32, visibility: Visibility | None = None,
                min_visible_fraction: float = 0.003, visibility_scale: float = 0.5,
                rules: str = 'official') -> list[QAItem]:
    """Return ground-truth QA items for ``scene`` seen along ``trajectory``.

    Up to ``max_per_task`` items per task, chosen deterministically from ``seed``
    (each task draws from its own random stream, so selecting tasks does not change
    the others' items). An object counts as seen in a frame when it covers at least
    ``min_visible_fraction`` of an id render at ``visibility_scale`` x (width, height);
    pass ``visibility`` to reuse one. Tasks with no valid question are simply absent.
    ``rules`` picks the question filters: ``'official'`` (the official generators'
    rules, default) or ``'exact'`` (this package's earlier exact-geometry rules, same
    items as before for the same seed); see the module docstring.
    Raises ValueError for an unknown task name or rule set.
    """
    if rules not in RULES:
        raise ValueError(f'unknown rules {rules!r}; known: {list(RULES)}')
    generators = _GENERATORS[rules]
    tasks = list(tasks)
    for task in tasks:
        if task not in generators:
            raise ValueError(f'unknown task {task!r}; known: {list(ALL_TASKS)}')
    if visibility is None:
        visibility = compute_visibility(scene, trajectory, K, width, height, visibility_scale)
    ctx = Context(scene, trajectory, visibility, min_visible_fraction, num_frames, rules)
    items: list[QAItem] = []
    for task in ALL_TASKS:
        if task not in tasks:
            continue
        rng = np.random.default_rng([int(seed), int(scene.seed), ALL_TASKS.index(task)])
        cands = generators[task](ctx, rng)
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
