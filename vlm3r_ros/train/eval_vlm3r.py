"""``vlm3r-eval-model`` (``make eval``): the fused model on held-out scenes, beside its controls.

    vlm3r-eval-model --data data/vlm3r --out out/eval_vlm3r.json

Scores the shipped small model (or ``--model`` / ``--blind-model`` release directories, read
by the node's own loader) on the debiased test split: scenes whose seeds no training scene
has. Beside it, per task and overall (the mean over tasks, as VSI-Bench):
- chance: 1 / options (multiple choice only);
- frequency: the most frequent training answer text (options) or the best training
  constant (numbers);
- blind twin: the same architecture and budget trained on the questions without frames;
- shuffled frames: the model given another test scene's frames (a derangement), which
  shows whether the answers depend on the frames at all.
95 % intervals come from a bootstrap over scenes (items of one scene move together), and
the paired difference model - blind gets its own interval. Multiple-choice answers use the
constrained letter choice (the node's default); numbers use greedy decoding and, as an
option, the median of the model's distribution over numbers (``--numeric median``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from vlm3r_ros.eval.qa import QAItem
from vlm3r_ros.models.vlm3r.model import Vlm3rModel, frame_tokens_from_features
from vlm3r_ros.pipeline.answers import build_prompt, parse_answer
from vlm3r_ros.train import qa_data
from vlm3r_ros.train.qa_debias import TextPrior, item_score, option_text

NUMERIC_MODES: tuple[str, ...] = ('greedy', 'median', 'expected')


def scene_frames(model: Vlm3rModel, cache: qa_data.FeatureCache, row: int) -> list[torch.Tensor]:
    """Return one scene's per-frame visual tokens from the cached tower features."""
    with torch.no_grad():
        vision = cache.vision[row].to(model.device, torch.float32)
        geometry = cache.geometry[row].to(model.device, torch.float32)
        geo = geometry if model.net.fusion_block is not None else None
        tokens = frame_tokens_from_features(model.net, model.profile, vision, geo)
    return [t.to(model.dtype) for t in tokens]


def predict(model: Vlm3rModel, item: QAItem, frames: Sequence[torch.Tensor],
            numeric: str = 'greedy', prefix_key: Any = None) -> str | float:
    """Return the model's answer: an option letter, or a number (NaN if none parsed)."""
    prompt = build_prompt(item.question, item.options, item.answer_type)
    if item.answer_type == 'option':
        index, _ = model.choose(prompt, frames, len(item.options), prefix_key=prefix_key)
        return chr(ord('A') + index)
    if numeric != 'greedy':
        try:
            return model.estimate_number(prompt, frames, numeric, prefix_key=prefix_key)
        except ValueError:
            return float('nan')
    return parse_answer(model.answer(prompt, frames, 16, prefix_key=prefix_key)).value


@dataclass
class ItemResults:
    """Per-item scores of one predictor, grouped for reporting."""

    items: list[QAItem]
    scores: list[float]
    predictions: list[Any] = field(default_factory=list)

    def by_task(self) -> dict[str, float]:
        """Return {task: mean score}."""
        groups: dict[str, list[float]] = defaultdict(list)
        for item, score in zip(self.items, self.scores):
            groups[item.task].append(score)
        return {t: float(np.mean(v)) for t, v in sorted(groups.items())}

    def summary(self) -> dict[str, Any]:
        """Return {'overall': mean over tasks, 'tasks': {task: mean}, 'items': n}."""
        tasks = self.by_task()
        return {'overall': float(np.mean(list(tasks.values()))) if tasks else float('nan'),
                'tasks': {k: round(v, 4) for k, v in tasks.items()}, 'items': len(self.items)}


def evaluate_items(model: Vlm3rModel, items: Sequence[QAItem],
                   cache: qa_data.FeatureCache | None, *, blind: bool = False,
                   shuffle: dict[int, int] | None = None, numeric: str = 'greedy'
                   ) -> ItemResults:
    """Score ``model`` on ``items``; frames come from ``cache`` (none when ``blind``).

    ``shuffle`` maps a scene seed to the seed whose frames it is shown instead.
    """
    rows = cache.index() if cache is not None else {}
    scores, preds = [], []
    frames_of: dict[int, list[torch.Tensor]] = {}
    for item in items:
        seed = qa_data.scene_of(item)
        if blind or cache is None:
            frames: list[torch.Tensor] = []
            key: Any = 'blind'
        else:
            shown = shuffle.get(seed, seed) if shuffle else seed
            if shown not in frames_of:
                frames_of.clear()  # items come scene by scene: keep one scene's tokens
                frames_of[shown] = scene_frames(model, cache, rows[shown])
            frames = frames_of[shown]
            key = ('scene', shown)
        pred = predict(model, item, frames, numeric, prefix_key=key)
        preds.append(pred)
        scores.append(item_score(item, pred))
    model.clear_cache()
    return ItemResults(list(items), scores, preds)


def frequency_results(items: Sequence[QAItem], train: Sequence[QAItem]) -> ItemResults:
    """Score the frequency baseline: the commonest training answer text / best constant."""
    prior = TextPrior.fit(train)
    common: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for it in train:
        if it.answer_type == 'option':
            common[it.task][it.answer_text.lower()] += 1
    scores, preds = [], []
    for item in items:
        if item.answer_type == 'option':
            ranked = common[item.task]
            texts = [option_text(o) for o in item.options]
            best = max(range(len(texts)), key=lambda i: ranked.get(texts[i], 0))
            pred: Any = chr(ord('A') + best)
        else:
            pred = prior.constant(item.task)
        preds.append(pred)
        scores.append(item_score(item, pred))
    return ItemResults(list(items), scores, preds)


def chance_results(items: Sequence[QAItem]) -> ItemResults:
    """Expected score of a random option (multiple choice only; numbers are left out)."""
    mc = [i for i in items if i.answer_type == 'option']
    return ItemResults(mc, [1.0 / len(i.options) for i in mc])


def derangement(seeds: Sequence[int], seed: int = 0) -> dict[int, int]:
    """Return a map sending every scene to a different one (a cyclic shift of a shuffle)."""
    order = np.random.default_rng(seed).permutation(sorted(set(seeds)))
    return {int(a): int(b) for a, b in zip(order, np.roll(order, 1))}


def bootstrap(results: dict[str, ItemResults], pairs: Sequence[tuple[str, str]],
              samples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Return 95 % intervals over scenes for every predictor's per-task and overall score,
    and for the paired differences ``a - b`` of ``pairs``."""
    rng = np.random.default_rng(seed)
    scenes = sorted({qa_data.scene_of(i) for r in results.values() for i in r.items})
    index = {s: n for n, s in enumerate(scenes)}
    tasks = sorted({i.task for r in results.values() for i in r.items})
    # sums[name][task] = per-scene (sum, count) so a resample is a weighted sum.
    tables = {}
    for name, res in results.items():
        sums = np.zeros((len(tasks), len(scenes)))
        counts = np.zeros((len(tasks), len(scenes)))
        for item, score in zip(res.items, res.scores):
            t, s = tasks.index(item.task), index[qa_data.scene_of(item)]
            sums[t, s] += score
            counts[t, s] += 1
        tables[name] = (sums, counts)
    draws = {name: {'tasks': [], 'overall': []} for name in results}
    diffs: dict[str, list[float]] = {f'{a}-{b}': [] for a, b in pairs}
    for _ in range(samples):
        weight = np.bincount(rng.integers(len(scenes), size=len(scenes)),
                             minlength=len(scenes))
        overall = {}
        for name, (sums, counts) in tables.items():
            c = counts @ weight
            per_task = np.where(c > 0, (sums @ weight) / np.maximum(c, 1), np.nan)
            draws[name]['tasks'].append(per_task)
            overall[name] = float(np.nanmean(per_task)) if np.isfinite(per_task).any() \
                else float('nan')
            draws[name]['overall'].append(overall[name])
        for a, b in pairs:
            diffs[f'{a}-{b}'].append(overall[a] - overall[b])

    def interval(values: Any) -> list[float]:
        lo, hi = np.nanpercentile(np.asarray(values, dtype=float), [2.5, 97.5], axis=0)
        return [float(lo), float(hi)] if np.ndim(lo) == 0 else [lo.tolist(), hi.tolist()]

    out: dict[str, Any] = {'tasks': tasks, 'scenes': len(scenes), 'samples': samples}
    for name in results:
        lo, hi = interval(draws[name]['tasks'])
        out[name] = {'overall': interval(draws[name]['overall']),
                     'tasks': {t: [round(l, 4), round(h, 4)] for t, l, h in zip(tasks, lo, hi)
                               if np.isfinite(l)}}
    out['differences'] = {k: interval(v) for k, v in diffs.items()}
    return out


def table(results: dict[str, ItemResults], intervals: dict[str, Any]) -> str:
    """Return the per-task table (scores in %, model with its 95 % interval)."""
    names = list(results)
    per = {n: r.by_task() for n, r in results.items()}
    tasks = sorted({t for r in results.values() for t in r.by_task()})
    head = f"{'task':30s} {'n':>5s} " + ' '.join(f'{n:>10s}' for n in names) + '   model 95% CI'
    lines = [head, '-' * len(head)]
    counts = defaultdict(int)
    for item in results[names[0]].items:
        counts[item.task] += 1
    for t in tasks:
        ci = intervals.get('model', {}).get('tasks', {}).get(t)
        cells = ' '.join(f'{100 * per[n][t]:10.1f}' if t in per[n] else f"{'-':>10s}"
                         for n in names)
        lines.append(f'{t:30s} {counts[t]:5d} {cells}   '
                     + (f'[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]' if ci else ''))
    overall = ' '.join(f"{100 * results[n].summary()['overall']:10.1f}" for n in names)
    ci = intervals.get('model', {}).get('overall')
    lines.append(f"{'overall (mean over tasks)':30s} {'':5s} {overall}   "
                 + (f'[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]' if ci else ''))
    return '\n'.join(lines)


def load_release(directory: str | Path) -> Vlm3rModel:
    """Load a release directory (``base/`` + ``adapter/``) with the node's loader."""
    from vlm3r_ros.models.profiles import get_profile
    from vlm3r_ros.models.vlm3r.checkpoint import load_vlm3r
    d = Path(directory)
    return load_vlm3r(d / 'base', d / 'adapter', profile=get_profile('tiny'))


def numeric_decodings(model: Vlm3rModel, items: Sequence[QAItem],
                      cache: qa_data.FeatureCache) -> dict[str, Any]:
    """Return {mode: summary} of the numeric items under every numeric decoding."""
    numeric_items = [i for i in items if i.answer_type == 'number']
    return {mode: evaluate_items(model, numeric_items, cache, numeric=mode).summary()
            for mode in NUMERIC_MODES}


def compare_numeric(model: Vlm3rModel, items: Sequence[QAItem], cache: qa_data.FeatureCache,
                    out: str, start: float) -> int:
    """Write and print only the numeric-decoding comparison (``--numeric-only``); 0."""
    doc = {'numeric_decoding': numeric_decodings(model, items, cache),
           'scenes': len({qa_data.scene_of(i) for i in items}),
           'seconds': round(time.monotonic() - start, 1)}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(doc, indent=1), encoding='utf8')
    for mode, summ in doc['numeric_decoding'].items():
        print(f"numeric decoding {mode:9s}: overall {100 * summ['overall']:.1f} {summ['tasks']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``vlm3r-eval-model``; print the table; return 0."""
    from vlm3r_ros.train.train_vlm3r import TrainConfig
    from vlm3r_ros.train.qa_debias import debias
    from vlm3r_ros.weights import VLM3R_SMALL, VLM3R_SMALL_BLIND
    p = argparse.ArgumentParser(prog='vlm3r-eval-model', description=__doc__.splitlines()[0])
    p.add_argument('--data', default='data/vlm3r')
    p.add_argument('--model', default=str(VLM3R_SMALL), help='release directory')
    p.add_argument('--blind-model', default=str(VLM3R_SMALL_BLIND), help='blind twin release')
    p.add_argument('--numeric', choices=NUMERIC_MODES, default='greedy')
    p.add_argument('--compare-numeric', action='store_true',
                   help='also score the numeric tasks with every numeric decoding')
    p.add_argument('--numeric-only', action='store_true',
                   help='only compare the numeric decodings (greedy, median, expected)')
    p.add_argument('--max-scenes', type=int, default=0, help='0 = every test scene')
    p.add_argument('--samples', type=int, default=1000, help='bootstrap resamples')
    p.add_argument('--workers', type=int, default=1,
                   help='processes that build the test feature cache when it is missing')
    p.add_argument('--out', default='out/eval_vlm3r.json')
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    start = time.monotonic()
    cfg = TrainConfig()
    model = load_release(args.model)
    blind = load_release(args.blind_model)
    splits = {s: qa_data.load_items(args.data, s) for s in ('train', 'test')}
    flat = {s: qa_data.flatten(v, sorted(v)) for s, v in splits.items()}
    train, held, report = debias(flat['train'], {'test': flat['test']},
                                 margin=cfg.debias_margin, seed=cfg.seed)
    test = held['test']
    cache_path = Path(args.data) / 'features-test-tiny.safetensors'
    tower = model.net.vision_tower.state_dict()
    if cache_path.is_file():  # the features must be the served tower's
        cache = qa_data.cache_for_tower(cache_path, args.data, 'test', model.profile, tower)
    else:
        from vlm3r_ros.weights import CUT3R_SMALL
        man = qa_data.manifest(args.data)
        cache = qa_data.build_feature_cache_parallel(
            args.data, 'test', model.profile, model.net.vision_tower.state_dict(),
            CUT3R_SMALL, int(man['qa_frames']), workers=args.workers)
        cache.save(cache_path, {'cut3r': str(CUT3R_SMALL),
                                'vision_sha256': qa_data.tower_digest(tower)})
    if args.max_scenes:
        keep = set(sorted(cache.seeds)[:args.max_scenes])
        test = [i for i in test if qa_data.scene_of(i) in keep]
    if args.numeric_only:
        return compare_numeric(model, test, cache, args.out, start)
    results = {
        'model': evaluate_items(model, test, cache, numeric=args.numeric),
        'blind': evaluate_items(blind, test, None, blind=True, numeric=args.numeric),
        'shuffled': evaluate_items(model, test, cache, numeric=args.numeric,
                                   shuffle=derangement([qa_data.scene_of(i) for i in test])),
        'frequency': frequency_results(test, train),
        'chance': chance_results(test),
    }
    intervals = bootstrap(results, [('model', 'blind'), ('model', 'shuffled')], args.samples)
    text = table(results, intervals)
    doc: dict[str, Any] = {
        'summary': {k: v.summary() for k, v in results.items()}, 'intervals': intervals,
        'numeric': args.numeric, 'test_items': len(test),
        'debias_test': [r.to_dict() for r in report['test']],
        'changed_by_shuffle': float(np.mean([a != b for a, b in zip(
            results['model'].predictions, results['shuffled'].predictions)])),
    }
    if args.compare_numeric:
        doc['numeric_decoding'] = numeric_decodings(model, test, cache)
    doc['seconds'] = round(time.monotonic() - start, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1), encoding='utf8')
    diff = intervals['differences']['model-blind']
    print(text)
    print(f"model - blind: {100 * (doc['summary']['model']['overall'] - doc['summary']['blind']['overall']):.1f} "
          f"points, 95% CI [{100 * diff[0]:.1f}, {100 * diff[1]:.1f}]; "
          f"answers changed by shuffled frames: {100 * doc['changed_by_shuffle']:.1f}%")
    if 'numeric_decoding' in doc:
        for mode, summ in doc['numeric_decoding'].items():
            print(f"numeric decoding {mode:9s}: {summ['tasks']}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
