"""VSI-Bench / VSTI-Bench scoring: MRA for numbers, exact letter match for options.

Two answer parsers (``parser``):

* ``'official'`` (the default, and what ``vlm3r-eval`` uses): exactly the official
  evaluators' rule, :func:`vlm3r_ros.eval.official_scoring.official_token` (split on ' '
  only, first piece, trailing dots removed, then stripped), the token compared to the
  letter case-insensitively or read with ``float()``; MRA divides by the signed ground
  truth. This is benchmark mode: the numbers are comparable with the papers.
* ``'lenient'``: the node's operator-facing parse,
  :func:`vlm3r_ros.pipeline.answers.parse_answer` (whitespace-split first token, one
  trailing '.' removed, a letter only counts when it names one of the options). It
  forgives a leading space or a newline; it is not the benchmark rule.

An unparseable or missing answer scores 0 either way. MRA = mean over the 10 thresholds
t = 0.50, 0.55, ..., 0.95 of 1[|pred - gt| / gt <= 1 - t], in float64 exactly as the
reference computes it (a relative error sitting exactly on a threshold can fall either
side by rounding).

Aggregation follows the official evaluators (see :mod:`vlm3r_ros.eval.official_scoring`):
items are grouped by their official question type (our pooled synthetic
``obj_obj_relative_pos`` and ``camera_obj_rel_dist`` split into their official
sub-types nf/lr/ud and v1/v2/v3); a type's score is the mean over its items. VSI-Bench's
overall averages its types with the three relative-direction levels merged into one
'object_rel_direction' group (8 groups); VSTI-Bench's overall averages every sub-type.
Each benchmark's overall is reported on its own (``Report.benchmarks``, None where the
official aggregation raises, e.g. a relative-direction level missing; ``Report.notes``
says so). ``Report.overall`` is OUR combined figure (mean over every group of both
benchmarks): no official number averages the two benchmarks.

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

from vlm3r_ros.eval.official_scoring import (DIRECTION_GROUP, DIRECTION_LEVELS, VSTI_ORDER,
                                             OfficialOverall, benchmark_of,
                                             official_exact_match, official_float,
                                             official_mra, official_overall,
                                             official_question_type, official_token)
from vlm3r_ros.eval.qa import LETTERS, TASK_BENCHMARK, VSI_TASKS, VSTI_TASKS, QAItem
from vlm3r_ros.pipeline.answers import parse_answer

# Exactly the reference's thresholds: linspace(0.5, 0.95, 10).
MRA_THRESHOLDS: np.ndarray = np.linspace(0.50, 0.95, 10)
REL_DIRECTION_TASKS = DIRECTION_LEVELS
REL_DIRECTION_GROUP = DIRECTION_GROUP
PARSERS = ('official', 'lenient')
COMBINED_LABEL = 'combined (ours, not an official metric)'

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
    """The score of one item: ``parsed`` is the token (official parser) or the letter or
    number (lenient parser) read from ``prediction`` ('' when nothing valid was read);
    ``missing`` when no prediction was given; ``question_type`` the official type the
    item is aggregated under."""

    id: str
    task: str
    answer: str
    prediction: str
    parsed: str
    score: float
    missing: bool
    question_type: str = ''


@dataclass(frozen=True)
class TaskScore:
    """Aggregate for one question type (or task group): metric 'MRA' or 'accuracy'."""

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
    """Scores per question type, per group and per benchmark; see the module docstring.

    ``benchmarks`` holds each benchmark's overall by the official rule (None where the
    official aggregation raises; ``notes`` say why); ``overall`` is our combined mean over
    every group of every benchmark, not an official metric.
    """

    tasks: list[TaskScore]
    groups: list[TaskScore]
    overall: float
    overall_chance: float
    benchmarks: dict[str, float | None]
    benchmark_chance: dict[str, float]
    items: list[ItemScore] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parser: str = 'official'
    official: dict[str, OfficialOverall] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (fractions in [0, 1])."""
        return {
            'overall': self.overall, 'overall_label': COMBINED_LABEL,
            'overall_chance': self.overall_chance,
            'benchmarks': self.benchmarks, 'benchmark_chance': self.benchmark_chance,
            'parser': self.parser, 'notes': list(self.notes),
            'official': {b: asdict(o) for b, o in self.official.items()},
            'tasks': [asdict(t) for t in self.tasks],
            'groups': [asdict(g) for g in self.groups],
            'items': [asdict(i) for i in self.items],
        }

    def to_json(self, indent: int | None = 1) -> str:
        """Return :meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    def to_table(self) -> str:
        """Return a fixed-width text table of question types, groups, each benchmark's
        official overall, our combined figure and the notes (percentages)."""
        header = f'{"task":<32} {"bench":<10} {"metric":<8} {"n":>4} {"score":>7} {"chance":>7}'
        lines = [header, '-' * len(header)]
        for t in self.tasks:
            lines.append(f'{t.task:<32} {t.benchmark:<10} {t.metric:<8} {t.n:>4} '
                         f'{100 * t.score:>7.1f} {100 * t.chance:>7.1f}')
        merged = [g for g in self.groups if g.task == REL_DIRECTION_GROUP]
        if merged:
            g = merged[0]
            lines.append(f'{g.task + " (avg)":<32} {g.benchmark:<10} {g.metric:<8} {g.n:>4} '
                         f'{100 * g.score:>7.1f} {100 * g.chance:>7.1f}')
        lines.append('-' * len(header))
        for bench, value in self.benchmarks.items():
            kind = 'official' if bench in self.official else 'ours'
            shown = 'n/a' if value is None else f'{100 * value:.1f}'
            lines.append(f'{bench + " overall (" + kind + ")":<32} {"":<10} {"":<8} {"":>4} '
                         f'{shown:>7} {100 * self.benchmark_chance[bench]:>7.1f}')
        lines.append(f'{COMBINED_LABEL:<51} {len(self.items):>4} '
                     f'{100 * self.overall:>7.1f} {100 * self.overall_chance:>7.1f}')
        lines.append(f'answers parsed with the {self.parser} rule')
        lines.extend(f'note: {n}' for n in self.notes)
        return '\n'.join(lines)

    def to_csv(self, path: str | Path) -> Path:
        """Write one row per task, group, benchmark and the combined figure; return path."""
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
                kind = 'official' if bench in self.official else 'ours'
                writer.writerow(['benchmark', f'overall ({kind})', bench, '', '',
                                 '' if value is None else f'{value:.6f}',
                                 f'{self.benchmark_chance[bench]:.6f}', '', '', ''])
            writer.writerow(['overall', 'combined (ours)', 'all', '', len(self.items),
                             f'{self.overall:.6f}', f'{self.overall_chance:.6f}', '', '', ''])
        return path


def question_type_of(item: QAItem) -> str:
    """Return the official question type ``item`` is aggregated under."""
    return official_question_type(item.task, item.options, item.meta)


def benchmark_of_item(item: QAItem) -> str:
    """Return the benchmark of ``item``: from its official question type, else its own."""
    return (benchmark_of(question_type_of(item)) or item.benchmark
            or TASK_BENCHMARK.get(item.task, 'custom'))


def score_item(item: QAItem, prediction: str | float | int | None,
               parser: str = 'official') -> ItemScore:
    """Return the score of one prediction (None = missing, scored 0).

    ``parser`` is 'official' (the evaluators' rule) or 'lenient' (the node's parse); see
    the module docstring. Raises ValueError for an unknown parser, an item of unknown
    answer type or a numeric item whose ground truth is zero.
    """
    if parser not in PARSERS:
        raise ValueError(f'parser must be one of {PARSERS}, got {parser!r}')
    missing = prediction is None
    text = '' if prediction is None else str(prediction)
    if item.answer_type not in ('number', 'option'):
        raise ValueError(f'unknown answer_type {item.answer_type!r} in item {item.id}')
    if parser == 'official':
        token = official_token(text)
        if item.answer_type == 'number':
            value = official_float(token)
            try:
                score = official_mra(value, official_float(item.answer))
            except ZeroDivisionError:
                raise ValueError(f'item {item.id}: MRA needs a non-zero ground truth '
                                 '(the official evaluators raise ZeroDivisionError)') from None
            valid = value is not None
        else:
            score = official_exact_match(token, str(item.answer))
            valid = len(token) == 1 and token.upper() in LETTERS[:len(item.options)]
        shown = token if valid and token else ''
    elif item.answer_type == 'number':
        parsed = parse_answer(text, item.options)
        value = parsed.value
        score = mean_relative_accuracy(value, float(item.answer))
        shown = '' if math.isnan(value) else repr(value)
    else:
        parsed = parse_answer(text, item.options)
        letter = parsed.option_letter
        score = 1.0 if letter and letter.lower() == str(item.answer).lower() else 0.0
        shown = letter
    return ItemScore(id=item.id, task=item.task, answer=str(item.answer), prediction=text,
                     parsed=shown, score=score, missing=missing,
                     question_type=question_type_of(item))


def _task_score(task: str, benchmark: str, items: Sequence[QAItem],
                scores: Sequence[ItemScore]) -> TaskScore:
    """Return the aggregate and chance levels for one question type's items."""
    numeric = items[0].answer_type == 'number'
    if numeric:
        freq = best_constant_mra([float(i.answer) for i in items])[1]
        rand = None
    else:
        top = Counter(str(i.answer).upper() for i in items).most_common(1)[0][1]
        freq = top / len(items)
        rand = float(np.mean([1.0 / max(len(i.options), 1) for i in items]))
    return TaskScore(
        task=task, benchmark=benchmark, metric='MRA' if numeric else 'accuracy', n=len(items),
        score=float(np.mean([s.score for s in scores])),
        chance=freq if rand is None else rand, chance_random=rand, chance_frequency=freq,
        missing=sum(s.missing for s in scores))


def _merge_direction(tasks: list[TaskScore]) -> list[TaskScore]:
    """Return task groups: the relative-direction levels present averaged into one entry."""
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
        # Keep VSI-Bench's task order: the merged group sits where the first level was.
        order = [t.task for t in tasks]
        at = min(order.index(t.task) for t in direction)
        before = [g for g in groups if order.index(g.task) < at]
        after = [g for g in groups if order.index(g.task) > at]
        groups = before + [merged] + after
    return groups


# Question types in VSI-Bench's table order, then VSTI-Bench's, then our pooled names.
_TASK_ORDER: tuple[str, ...] = VSI_TASKS + VSTI_ORDER + VSTI_TASKS
_BENCH_ORDER = ('VSI-Bench', 'VSTI-Bench')


def score_items(items: Sequence[QAItem],
                predictions: Mapping[str, str | float | int | None],
                parser: str = 'official') -> Report:
    """Return the :class:`Report` for ``predictions`` (item id -> model answer text).

    Items without a prediction score 0 and are counted as missing. Raises ValueError
    when ``items`` is empty, item ids repeat or ``parser`` is unknown.
    """
    if not items:
        raise ValueError('no items to score')
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise ValueError('item ids must be unique')
    scored = [score_item(i, predictions.get(i.id), parser) for i in items]
    kinds = [(s.question_type, benchmark_of_item(i)) for i, s in zip(items, scored)]
    order = {t: k for k, t in reversed(list(enumerate(_TASK_ORDER)))}
    keys = sorted(set(kinds), key=lambda k: (order.get(k[0], len(order)), k[0], k[1]))
    tasks = []
    for qtype, bench in keys:
        idx = [k for k, kind in enumerate(kinds) if kind == (qtype, bench)]
        tasks.append(_task_score(qtype, bench, [items[k] for k in idx],
                                 [scored[k] for k in idx]))
    vsi = _merge_direction([t for t in tasks if t.benchmark == 'VSI-Bench'])
    groups = vsi + [t for t in tasks if t.benchmark != 'VSI-Bench']
    benches = [b for b in _BENCH_ORDER if any(t.benchmark == b for t in tasks)]
    benches += sorted({t.benchmark for t in tasks} - set(_BENCH_ORDER))
    benchmarks: dict[str, float | None] = {}
    bench_chance: dict[str, float] = {}
    official: dict[str, OfficialOverall] = {}
    notes: list[str] = []
    for bench in benches:
        sel = [g for g in groups if g.benchmark == bench]
        bench_chance[bench] = float(np.mean([g.chance for g in sel]))
        if bench not in _BENCH_ORDER:
            benchmarks[bench] = float(np.mean([g.score for g in sel]))
            notes.append(f'{bench}: not an official benchmark; its overall is our mean over '
                         'its question types')
            continue
        type_scores = {t.task: t.score for t in tasks if t.benchmark == bench}
        try:
            result = official_overall(bench, type_scores)
        except ValueError as exc:
            benchmarks[bench] = None
            notes.append(f'{bench}: no official overall: {exc} (items of a pooled task '
                         'need their official sub-type)')
            continue
        official[bench] = result
        benchmarks[bench] = result.overall
        notes.extend(f'{bench}: {n}' for n in result.notes)
    if len(benches) > 1:
        notes.append('the combined figure averages every group of '
                     f'{" and ".join(benches)}: ours, not an official number (each '
                     'benchmark reports its own overall)')
    return Report(tasks=tasks, groups=groups,
                  overall=float(np.mean([g.score for g in groups])),
                  overall_chance=float(np.mean([g.chance for g in groups])),
                  benchmarks=benchmarks, benchmark_chance=bench_chance, items=scored,
                  notes=notes, parser=parser, official=official)


def plot_bar_chart(report: Report, path_png: str | Path, title: str = 'Spatial QA scores'
                   ) -> Path:
    """Draw per-task scores beside their chance baselines (plus overall) to a PNG.

    Uses matplotlib's Agg canvas directly (no global backend change). Returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    benches = [b for b, v in report.benchmarks.items() if v is not None]
    labels = [t.task for t in report.tasks] + [f'{b} overall' for b in benches]
    scores = ([100 * t.score for t in report.tasks]
              + [100 * float(report.benchmarks[b] or 0.0) for b in benches])
    chance = ([100 * t.chance for t in report.tasks]
              + [100 * report.benchmark_chance[b] for b in benches])
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
