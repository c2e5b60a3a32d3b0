"""VSI-Bench / VSTI-Bench scoring: MRA for numbers, exact letter match for options.

Scoring follows the official VSI-Bench evaluator (thinking-in-space ``lmms_eval`` task):

* Answers are parsed by :func:`vlm3r_ros.pipeline.answers.parse_answer` (first token,
  trailing '.' removed; option letters case-insensitive; numbers via ``float``); an
  unparseable or missing answer scores 0.
* MRA = mean over the 10 thresholds t = 0.50, 0.55, ..., 0.95 of
  1[|pred - gt| / gt <= 1 - t], in float64 exactly as the reference computes it (so a
  relative error sitting exactly on a threshold can fall either side by rounding).
* A task's score is the mean over its items; the overall score is the mean over task
  groups, where the three relative-direction levels are first averaged into one
  'object_rel_direction' group (as the reference does), giving VSI-Bench's 8 groups.

Chance baselines, per task:

* Multiple choice, ``chance_random``: mean over items of 1 / number of options.
* ``chance_frequency`` (VSI-Bench's "Chance Level (Frequency)": the best score of always
  giving the same answer): for multiple choice, the accuracy of always answering the
  most frequent correct letter; for numbers, the mean MRA of the single best constant
  answer over the task's ground truths (found exactly: the optimum lies at an interval
  end gt * t or gt * (2 - t)). With few items this is optimistic (one item: 100%).
* The ``chance`` column is ``chance_random`` for multiple choice and
  ``chance_frequency`` for numeric tasks.

Scores are fractions in [0, 1]; tables and plots show percentages.
"""
from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from vlm3r_ros.eval.qa import ALL_TASKS, TASK_BENCHMARK, QAItem
from vlm3r_ros.pipeline.answers import parse_answer

# Exactly the reference's thresholds: linspace(0.5, 0.95, 10).
MRA_THRESHOLDS: np.ndarray = np.linspace(0.50, 0.95, 10)
REL_DIRECTION_TASKS = ('object_rel_direction_easy', 'object_rel_direction_medium',
                       'object_rel_direction_hard')
REL_DIRECTION_GROUP = 'object_rel_direction'

# Published VSI-Bench chance levels (%), Table 1 of "Thinking in Space", for reference.
PUBLISHED_VSIBENCH_CHANCE: dict[str, dict[str, float]] = {
    'random': {'object_rel_distance': 25.0, 'object_rel_direction': 36.1,
               'route_planning': 28.3, 'obj_appearance_order': 25.0},
    'frequency': {'overall': 34.0, 'object_counting': 62.1, 'object_abs_distance': 32.0,
                  'object_size_estimation': 29.9, 'room_size_estimation': 33.1,
                  'object_rel_distance': 25.1, 'object_rel_direction': 47.9,
                  'route_planning': 28.4, 'obj_appearance_order': 25.2},
}


def mean_relative_accuracy(pred: float, gt: float) -> float:
    """Return the MRA of ``pred`` against ``gt`` (0 for a NaN/inf prediction).

    Raises ValueError when ``gt`` is zero or not finite (relative error undefined).
    """
    if not math.isfinite(gt) or gt == 0:
        raise ValueError(f'MRA needs a finite non-zero ground truth, got {gt!r}')
    if not math.isfinite(pred):
        return 0.0
    rel = abs(pred - gt) / abs(gt)
    return float(np.mean(rel <= 1.0 - MRA_THRESHOLDS))


def best_constant_mra(gts: Sequence[float]) -> tuple[float, float]:
    """Return (best constant answer, its mean MRA) over ground truths ``gts``.

    Each indicator 1[|c - g| <= (1 - t) g] is an interval in c with ends g*t and
    g*(2 - t), so the best constant is one of those ends (or a g itself); among ties a
    ground-truth value is preferred. Raises ValueError for an empty list.
    """
    values = np.asarray(list(gts), dtype=np.float64)
    if values.size == 0:
        raise ValueError('need at least one ground truth')
    cands = np.unique(np.concatenate([values, np.outer(values, MRA_THRESHOLDS).ravel(),
                                      np.outer(values, 2.0 - MRA_THRESHOLDS).ravel()]))
    scores = np.empty(len(cands))
    tol = 1.0 - MRA_THRESHOLDS
    step = max(1, 2_000_000 // (values.size * tol.size))  # bound the temporary's size
    for start in range(0, len(cands), step):
        chunk = cands[start:start + step]
        rel = np.abs(chunk[:, None] - values[None, :]) / np.abs(values)[None, :]
        scores[start:start + step] = (rel[:, :, None] <= tol).mean(axis=(1, 2))
    top = np.flatnonzero(scores >= scores.max() - 1e-12)
    # Among equally good constants prefer an actual ground-truth value (a real answer).
    real = [i for i in top if cands[i] in set(values.tolist())]
    best = int(real[0] if real else top[0])
    return float(cands[best]), float(scores[best])


@dataclass(frozen=True)
class ItemScore:
    """The score of one item: ``parsed`` is the letter or number read from ``prediction``
    ('' when nothing valid was read); ``missing`` when no prediction was given."""

    id: str
    task: str
    answer: str
    prediction: str
    parsed: str
    score: float
    missing: bool


@dataclass(frozen=True)
class TaskScore:
    """Aggregate for one task (or task group): metric 'MRA' or 'accuracy'."""

    task: str
    benchmark: str
    metric: str
    n: int
    score: float
    chance: float
    chance_random: float | None
    chance_frequency: float
    missing: int


@dataclass
class Report:
    """Scores per task and overall, with chance baselines; see the module docstring."""

    tasks: list[TaskScore]
    groups: list[TaskScore]
    overall: float
    overall_chance: float
    benchmarks: dict[str, float]
    benchmark_chance: dict[str, float]
    items: list[ItemScore] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (fractions in [0, 1])."""
        return {
            'overall': self.overall, 'overall_chance': self.overall_chance,
            'benchmarks': self.benchmarks, 'benchmark_chance': self.benchmark_chance,
            'tasks': [asdict(t) for t in self.tasks],
            'groups': [asdict(g) for g in self.groups],
            'items': [asdict(i) for i in self.items],
        }

    def to_json(self, indent: int | None = 1) -> str:
        """Return :meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    def to_table(self) -> str:
        """Return a fixed-width text table of tasks, groups and overall (percentages)."""
        header = f'{"task":<30} {"bench":<10} {"metric":<8} {"n":>4} {"score":>7} {"chance":>7}'
        lines = [header, '-' * len(header)]
        for t in self.tasks:
            lines.append(f'{t.task:<30} {t.benchmark:<10} {t.metric:<8} {t.n:>4} '
                         f'{100 * t.score:>7.1f} {100 * t.chance:>7.1f}')
        merged = [g for g in self.groups if g.task == REL_DIRECTION_GROUP]
        if merged:
            g = merged[0]
            lines.append(f'{g.task + " (avg)":<30} {g.benchmark:<10} {g.metric:<8} {g.n:>4} '
                         f'{100 * g.score:>7.1f} {100 * g.chance:>7.1f}')
        lines.append('-' * len(header))
        for bench, value in self.benchmarks.items():
            lines.append(f'{"overall " + bench:<30} {"":<10} {"":<8} {"":>4} '
                         f'{100 * value:>7.1f} {100 * self.benchmark_chance[bench]:>7.1f}')
        lines.append(f'{"overall":<30} {"":<10} {"":<8} {len(self.items):>4} '
                     f'{100 * self.overall:>7.1f} {100 * self.overall_chance:>7.1f}')
        return '\n'.join(lines)

    def to_csv(self, path: str | Path) -> Path:
        """Write one row per task, group and overall to ``path`` (CSV); return the path."""
        path = Path(path)
        with path.open('w', newline='', encoding='utf8') as fh:
            writer = csv.writer(fh)
            writer.writerow(['row', 'task', 'benchmark', 'metric', 'n', 'score', 'chance',
                             'chance_random', 'chance_frequency', 'missing'])
            for kind, rows in (('task', self.tasks), ('group', self.groups)):
                for t in rows:
                    writer.writerow([kind, t.task, t.benchmark, t.metric, t.n, f'{t.score:.6f}',
                                     f'{t.chance:.6f}',
                                     '' if t.chance_random is None else f'{t.chance_random:.6f}',
                                     f'{t.chance_frequency:.6f}', t.missing])
            for bench, value in self.benchmarks.items():
                writer.writerow(['benchmark', 'overall', bench, '', '', f'{value:.6f}',
                                 f'{self.benchmark_chance[bench]:.6f}', '', '', ''])
            writer.writerow(['overall', 'overall', 'all', '', len(self.items),
                             f'{self.overall:.6f}', f'{self.overall_chance:.6f}', '', '', ''])
        return path


def score_item(item: QAItem, prediction: str | float | int | None) -> ItemScore:
    """Return the score of one prediction (None = missing, scored 0).

    Raises ValueError for an item of unknown answer type or a numeric item whose
    ground truth is zero.
    """
    missing = prediction is None
    text = '' if prediction is None else str(prediction)
    parsed = parse_answer(text, item.options)
    if item.answer_type == 'number':
        value = parsed.value
        score = mean_relative_accuracy(value, float(item.answer))
        shown = '' if math.isnan(value) else repr(value)
    elif item.answer_type == 'option':
        letter = parsed.option_letter
        score = 1.0 if letter and letter.lower() == str(item.answer).lower() else 0.0
        shown = letter
    else:
        raise ValueError(f'unknown answer_type {item.answer_type!r} in item {item.id}')
    return ItemScore(id=item.id, task=item.task, answer=str(item.answer), prediction=text,
                     parsed=shown, score=score, missing=missing)


def _task_score(task: str, items: Sequence[QAItem], scores: Sequence[ItemScore]) -> TaskScore:
    """Return the aggregate and chance levels for one task's items."""
    numeric = items[0].answer_type == 'number'
    if numeric:
        freq = best_constant_mra([float(i.answer) for i in items])[1]
        rand = None
    else:
        top = Counter(str(i.answer).upper() for i in items).most_common(1)[0][1]
        freq = top / len(items)
        rand = float(np.mean([1.0 / max(len(i.options), 1) for i in items]))
    return TaskScore(
        task=task, benchmark=TASK_BENCHMARK.get(task, 'custom'),
        metric='MRA' if numeric else 'accuracy', n=len(items),
        score=float(np.mean([s.score for s in scores])),
        chance=freq if rand is None else rand, chance_random=rand, chance_frequency=freq,
        missing=sum(s.missing for s in scores))


def _merge_direction(tasks: list[TaskScore]) -> list[TaskScore]:
    """Return task groups: the relative-direction levels averaged into one entry."""
    direction = [t for t in tasks if t.task in REL_DIRECTION_TASKS]
    groups = [t for t in tasks if t.task not in REL_DIRECTION_TASKS]
    if direction:
        rand = [t.chance_random for t in direction if t.chance_random is not None]
        merged = TaskScore(
            task=REL_DIRECTION_GROUP, benchmark='VSI-Bench', metric='accuracy',
            n=sum(t.n for t in direction),
            score=float(np.mean([t.score for t in direction])),
            chance=float(np.mean([t.chance for t in direction])),
            chance_random=float(np.mean(rand)) if rand else None,
            chance_frequency=float(np.mean([t.chance_frequency for t in direction])),
            missing=sum(t.missing for t in direction))
        # Keep VSI-Bench's task order: the merged group sits where 'easy' was.
        order = [t.task for t in tasks]
        at = min(order.index(t.task) for t in direction)
        before = [g for g in groups if order.index(g.task) < at]
        after = [g for g in groups if order.index(g.task) > at]
        groups = before + [merged] + after
    return groups


def score_items(items: Sequence[QAItem],
                predictions: Mapping[str, str | float | int | None]) -> Report:
    """Return the :class:`Report` for ``predictions`` (item id -> model answer text).

    Items without a prediction score 0 and are counted as missing. Raises ValueError
    when ``items`` is empty or item ids repeat.
    """
    if not items:
        raise ValueError('no items to score')
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise ValueError('item ids must be unique')
    scored = [score_item(i, predictions.get(i.id)) for i in items]
    known = [t for t in ALL_TASKS if any(i.task == t for i in items)]
    extra = sorted({i.task for i in items} - set(known))
    tasks = []
    for task in known + extra:
        idx = [k for k, i in enumerate(items) if i.task == task]
        tasks.append(_task_score(task, [items[k] for k in idx], [scored[k] for k in idx]))
    groups = _merge_direction(tasks)
    benchmarks: dict[str, float] = {}
    bench_chance: dict[str, float] = {}
    for bench in sorted({g.benchmark for g in groups}):
        sel = [g for g in groups if g.benchmark == bench]
        benchmarks[bench] = float(np.mean([g.score for g in sel]))
        bench_chance[bench] = float(np.mean([g.chance for g in sel]))
    return Report(tasks=tasks, groups=groups,
                  overall=float(np.mean([g.score for g in groups])),
                  overall_chance=float(np.mean([g.chance for g in groups])),
                  benchmarks=benchmarks, benchmark_chance=bench_chance, items=scored)


def plot_bar_chart(report: Report, path_png: str | Path, title: str = 'Spatial QA scores'
                   ) -> Path:
    """Draw per-task scores beside their chance baselines (plus overall) to a PNG.

    Uses matplotlib's Agg canvas directly (no global backend change). Returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = [t.task for t in report.tasks] + ['overall']
    scores = [100 * t.score for t in report.tasks] + [100 * report.overall]
    chance = [100 * t.chance for t in report.tasks] + [100 * report.overall_chance]
    x = np.arange(len(labels))
    fig = Figure(figsize=(max(6.0, 0.7 * len(labels) + 2.0), 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(x - 0.2, scores, width=0.4, label='model', color='#3465a4')
    ax.bar(x + 0.2, chance, width=0.4, label='chance', color='#babdb6')
    for xi, s in zip(x, scores):
        ax.text(xi - 0.2, s + 1.0, f'{s:.0f}', ha='center', va='bottom', fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=40, ha='right', fontsize=8)
    ax.set_ylabel('score (%)')
    ax.set_ylim(0, 110)
    ax.set_title(title)
    ax.legend(loc='upper right', fontsize=8)
    fig.tight_layout()
    path = Path(path_png)
    fig.savefig(path, dpi=110)
    return path
