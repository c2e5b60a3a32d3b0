"""Debias synthetic spatial QA so that the question text alone cannot beat chance.

The generator's answers carry text priors a blind model exploits (camera movement is mostly
'Forward', object size follows the category named in the question, ...). Like Cambrian-S's
debiased VSI-Bench, we prune the items a *blind* predictor gets right until, per task, it is
no better than chance (multiple choice: 1 / options) or than the best constant (numbers) by
more than ``margin``.

The blind predictor (`TextPrior`) sees only text:
- multiple choice: it picks the option whose text was most often correct for this task in
  its training items (Laplace-smoothed rate);
- numbers: it predicts the median training answer of questions with the same text once
  digits are masked (so 'the chair' and 'the sofa' get their own medians), falling back to
  the task median.
It is fitted on training items only: training items are judged by 2-fold cross-fitting (a
half is judged by the prior fitted on the other half), held-out items by the prior of all
training items, so held-out answers never shape the rule that prunes them. Pruning repeats
a few rounds, refitting on what is left, since removing items shifts the priors.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from vlm3r_ros.eval.qa import QAItem
from vlm3r_ros.eval.scoring import best_constant_mra, mean_relative_accuracy, score_item

_DIGITS = re.compile(r'\d+(\.\d+)?')


def question_key(item: QAItem) -> str:
    """Return the item's question text, lower case, with numbers masked as '#'."""
    return _DIGITS.sub('#', item.question.lower()).strip()


def option_text(option: str) -> str:
    """Return an option's text without its 'A. ' label, lower case."""
    text = option.strip()
    if len(text) > 2 and text[1] == '.':
        text = text[2:]
    return text.strip().lower()


def chance(item: QAItem) -> float:
    """Return the expected score of a random option (0 for a numeric item)."""
    return 1.0 / len(item.options) if item.options else 0.0


@dataclass
class TextPrior:
    """A blind (text-only) predictor fitted on training items of any tasks."""

    shown: dict[tuple[str, str], int] = field(default_factory=dict)
    correct: dict[tuple[str, str], int] = field(default_factory=dict)
    medians: dict[tuple[str, str], float] = field(default_factory=dict)
    task_medians: dict[str, float] = field(default_factory=dict)
    constants: dict[str, float] = field(default_factory=dict)
    min_count: int = 3

    @classmethod
    def fit(cls, items: Iterable[QAItem], min_count: int = 3) -> 'TextPrior':
        """Return the prior of ``items`` (medians need ``min_count`` equal questions)."""
        prior = cls(min_count=min_count)
        numbers: dict[tuple[str, str], list[float]] = defaultdict(list)
        per_task: dict[str, list[float]] = defaultdict(list)
        for item in items:
            if item.answer_type == 'option':
                answer = ord(str(item.answer)) - ord('A')
                for index, option in enumerate(item.options):
                    key = (item.task, option_text(option))
                    prior.shown[key] = prior.shown.get(key, 0) + 1
                    prior.correct[key] = prior.correct.get(key, 0) + int(index == answer)
            else:
                numbers[(item.task, question_key(item))].append(float(item.answer))
                per_task[item.task].append(float(item.answer))
        prior.medians = {k: float(np.median(v)) for k, v in numbers.items()
                         if len(v) >= min_count}
        prior.task_medians = {t: float(np.median(v)) for t, v in per_task.items()}
        prior.constants = {t: best_constant_mra(v)[0] for t, v in per_task.items()}
        return prior

    def option_scores(self, item: QAItem) -> list[float]:
        """Return the smoothed 'this option text is the answer' rate of each option."""
        scores = []
        for option in item.options:
            key = (item.task, option_text(option))
            scores.append((self.correct.get(key, 0) + 1.0) / (self.shown.get(key, 0) + 2.0))
        return scores

    def predict(self, item: QAItem) -> str | float:
        """Return the blind answer: an option letter or a number."""
        if item.answer_type == 'option':
            return chr(ord('A') + int(np.argmax(self.option_scores(item))))
        key = (item.task, question_key(item))
        return self.medians.get(key, self.task_medians.get(item.task, 0.0))

    def constant(self, task: str) -> float:
        """Return the best constant number of a numeric task (0 if unseen)."""
        return self.constants.get(task, 0.0)


def item_score(item: QAItem, prediction: str | float) -> float:
    """Return the benchmark score of a prediction (0/1 for options, MRA for numbers)."""
    return score_item(item, prediction).score


def baseline_score(item: QAItem, prior: TextPrior) -> float:
    """Return the score that chance (options) or the best constant (numbers) gets."""
    if item.answer_type == 'option':
        return chance(item)
    return mean_relative_accuracy(prior.constant(item.task), float(item.answer))


@dataclass(frozen=True)
class TaskDebias:
    """What debiasing did to one task of one split."""

    task: str
    items_before: int
    items_after: int
    blind_before: float
    blind_after: float
    baseline_before: float
    baseline_after: float

    def to_dict(self) -> dict[str, float | int | str]:
        """Return a JSON-ready dict."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(self).items()}


def _judge(items: Sequence[QAItem], prior: TextPrior) -> tuple[np.ndarray, np.ndarray]:
    """Return (blind scores, baseline scores) of ``items`` under ``prior``."""
    blind = np.array([item_score(i, prior.predict(i)) for i in items], dtype=float)
    base = np.array([baseline_score(i, prior) for i in items], dtype=float)
    return blind, base


def _cross_fit(items: Sequence[QAItem], rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
    """Judge training items by 2-fold cross-fitting; return (blind, baseline) scores."""
    fold = rng.permutation(len(items)) % 2
    blind = np.zeros(len(items))
    base = np.zeros(len(items))
    for k in (0, 1):
        prior = TextPrior.fit(i for i, f in zip(items, fold) if f != k)
        idx = np.flatnonzero(fold == k)
        b, c = _judge([items[j] for j in idx], prior)
        blind[idx], base[idx] = b, c
    return blind, base


def _prune(blind: np.ndarray, base: np.ndarray, margin: float, rng: np.random.Generator
           ) -> np.ndarray:
    """Return a keep mask that removes random blind-favoured items until the blind mean
    is within ``margin`` of the baseline mean (or nothing favoured is left)."""
    keep = np.ones(len(blind), dtype=bool)
    favoured = rng.permutation(np.flatnonzero(blind > base))
    step = max(1, len(favoured) // 50)
    cursor = 0
    while keep.any() and blind[keep].mean() > base[keep].mean() + margin \
            and cursor < len(favoured):
        keep[favoured[cursor:cursor + step]] = False
        cursor += step
    return keep


def balance_answers(items: Sequence[QAItem], rng: np.random.Generator,
                    min_share: float = 0.02) -> list[QAItem]:
    """Return multiple-choice items with every correct answer text equally frequent.

    Per task, each answer text (e.g. 'Forward', 'front-left') keeps as many items as the
    rarest text that has at least ``min_share`` of the task's items; rarer texts are dropped
    (too few to balance against); a task whose answers are all rarer than that (orders of
    several objects) is kept whole. Numeric items pass through. Order is kept.
    """
    keep = np.zeros(len(items), dtype=bool)
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for n, item in enumerate(items):
        if item.answer_type != 'option':
            keep[n] = True
        else:
            groups[(item.task, item.answer_text.lower())].append(n)
    for task in sorted({t for t, _ in groups}):
        sizes = {k: len(v) for k, v in groups.items() if k[0] == task}
        total = sum(sizes.values())
        usable = [k for k, v in sizes.items() if v >= min_share * total]
        if not usable:  # answers too varied to balance by text (orders): keep them all
            for v in (groups[k] for k in sizes):
                keep[v] = True
            continue
        cap = min(sizes[k] for k in usable)
        for k in sorted(usable):
            keep[rng.permutation(groups[k])[:cap]] = True
    return [i for i, k in zip(items, keep) if k]


def debias(train: Sequence[QAItem], held_out: dict[str, Sequence[QAItem]], *,
           margin: float = 0.02, rounds: int = 1, seed: int = 0
           ) -> tuple[list[QAItem], dict[str, list[QAItem]], dict[str, list[TaskDebias]]]:
    """Debias the multiple-choice tasks of every split; numeric tasks are kept as they are.

    1. `balance_answers` on each split (answer-text priors, e.g. 'Forward' in 63 %);
    2. ``rounds`` of pruning blind-solvable training items (cross-fitted `TextPrior`:
       the remaining option-set priors of tasks whose options vary, like object names);
    3. each ``held_out`` split pruned once by the prior of the final training items.
    Returns (kept train items, kept held-out items per split, per-split reports with the
    blind score before and after; 'before' uses the prior of the raw training items).
    Deterministic for a given ``seed``. Numeric tasks are not pruned: removing the items a
    category prior gets right leaves only answers near the global constant, which is no
    harder (the report still shows their blind score beside the best constant).
    """
    rng = np.random.default_rng(seed)
    raw_prior = TextPrior.fit(train)
    before = {'train': _task_scores(train, raw_prior, cross=True, rng=rng),
              **{k: _task_scores(v, raw_prior, cross=False, rng=rng)
                 for k, v in held_out.items()}}
    kept_train = balance_answers(train, rng)
    kept_held = {k: balance_answers(v, rng) for k, v in held_out.items()}
    tasks = sorted({i.task for i in kept_train if i.answer_type == 'option'})
    for _ in range(rounds):
        out = [i for i in kept_train if i.answer_type != 'option']
        for task in tasks:
            sub = [i for i in kept_train if i.task == task]
            blind, base = _cross_fit(sub, rng)
            out.extend(i for i, k in zip(sub, _prune(blind, base, margin, rng)) if k)
        kept_train = out
    prior = TextPrior.fit(kept_train)
    for name, items in kept_held.items():
        out = [i for i in items if i.answer_type != 'option']
        for task in tasks:
            sub = [i for i in items if i.task == task]
            if sub:
                blind, base = _judge(sub, prior)
                out.extend(i for i, k in zip(sub, _prune(blind, base, margin, rng)) if k)
        kept_held[name] = out
    after = {'train': _task_scores(kept_train, prior, cross=True, rng=rng),
             **{k: _task_scores(v, prior, cross=False, rng=rng) for k, v in kept_held.items()}}
    reports: dict[str, list[TaskDebias]] = {}
    for name in before:
        rows = []
        for task, (n0, blind0, base0) in before[name].items():
            n1, blind1, base1 = after[name].get(task, (0, float('nan'), float('nan')))
            rows.append(TaskDebias(task, n0, n1, blind0, blind1, base0, base1))
        reports[name] = rows
    return kept_train, kept_held, reports


def _task_scores(items: Sequence[QAItem], prior: TextPrior, *, cross: bool,
                 rng: np.random.Generator) -> dict[str, tuple[int, float, float]]:
    """Return {task: (items, blind mean, baseline mean)}."""
    out: dict[str, tuple[int, float, float]] = {}
    for task in sorted({i.task for i in items}):
        sub = [i for i in items if i.task == task]
        blind, base = _cross_fit(sub, rng) if cross else _judge(sub, prior)
        out[task] = (len(sub), float(blind.mean()), float(base.mean()))
    return out
