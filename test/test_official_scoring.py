"""Scoring in benchmark mode against an independent transcription of the official rules.

The transcription below is written from the rules of thinking-in-space's
``lmms_eval/tasks/vsibench/utils.py`` and VLM-3R's ``lmms_eval/tasks/vstibench/utils.py``
(parse, exact match, MRA, pandas group means, the direction merge, the plain mean over
types); it shares no code with :mod:`vlm3r_ros.eval.official_scoring`.
"""
import math

import numpy as np
import pandas as pd
import pytest

from vlm3r_ros.eval.official_scoring import (official_overall, official_question_type,
                                             official_token)
from vlm3r_ros.eval.qa import QAItem
from vlm3r_ros.eval.scoring import score_item, score_items

# ----------------------------------------------------------------- the transcription
T_MCA = {
    'VSI-Bench': ['object_rel_direction_easy', 'object_rel_direction_medium',
                  'object_rel_direction_hard', 'object_rel_distance', 'route_planning',
                  'obj_appearance_order'],
    'VSTI-Bench': ['obj_obj_relative_pos_nf', 'obj_obj_relative_pos_ud',
                   'obj_obj_relative_pos_lr', 'camera_obj_rel_dist_v1',
                   'camera_obj_rel_dist_v2', 'camera_obj_rel_dist_v3',
                   'camera_movement_direction']}
T_NA = {
    'VSI-Bench': ['object_abs_distance', 'object_counting', 'object_size_estimation',
                  'room_size_estimation'],
    'VSTI-Bench': ['camera_obj_abs_dist', 'camera_displacement']}


def t_parse(pred):
    return pred.split(' ')[0].rstrip('.').strip()


def t_float(x):
    try:
        return float(x)
    except BaseException:  # noqa: BLE001 - the evaluators catch everything here
        return None


def t_mra(pred, target):
    points = np.linspace(.5, .95, int((.95 - .5) / .05 + 2))
    return (abs(pred - target) / target <= 1 - points).mean()


def t_score(bench, qtype, pred, target):
    if qtype in T_MCA[bench]:
        return 1. if t_parse(pred).lower() == target.lower() else 0.
    try:
        return t_mra(t_float(t_parse(pred)), t_float(target))
    except TypeError:
        return 0.


def t_aggregate(bench, rows):
    frame = pd.DataFrame(rows, columns=['question_type', 'score'])
    out = {}
    for qtype, index in frame.groupby('question_type').groups.items():
        out[qtype] = frame.loc[index, 'score'].mean()
    if bench == 'VSI-Bench' and 'object_rel_direction_easy' in out:
        out['object_rel_direction'] = (out.pop('object_rel_direction_easy')
                                       + out.pop('object_rel_direction_medium')
                                       + out.pop('object_rel_direction_hard')) / 3.
    return sum(out.values()) / len(out), out


# ----------------------------------------------------------------- random predictions
CORES = ['A', 'B', 'C', 'D', 'a', 'b', 'E', 'AB', '3', '3.5', '12', '0.5', '-2', '1e3', '1e400',
         'nan', 'inf', '-inf', '1_000', '+4', '4,5', '0', '.5', '5.', 'ten', '', '.', '...',
         'A)', '(A)', '3m']
PREFIXES = ['', '', '', ' ', '  ', '\n', '\t', ' \n']
SUFFIXES = ['', '', '.', '..', '...', ' ', '\n', '.\n', '. ', ' meters', '. sofa', '\nB',
            ' .', '\t', '.\t.', '.  ']


def random_prediction(rng):
    text = rng.choice(PREFIXES) + rng.choice(CORES) + rng.choice(SUFFIXES)
    if rng.random() < 0.1:
        text += rng.choice(SUFFIXES)
    return str(text)


def random_items(rng, bench, n):
    types = T_MCA[bench] + T_NA[bench]
    items, truth = [], []
    for k in range(n):
        qtype = types[int(rng.integers(len(types)))]
        if qtype in T_MCA[bench]:
            n_opt = {'camera_obj_rel_dist_v2': 3, 'camera_obj_rel_dist_v3': 2}.get(qtype, 4)
            gt = 'ABCD'[int(rng.integers(n_opt))]
            options = [f'{"ABCD"[i]}. o{i}' for i in range(n_opt)]
            kind = 'option'
        else:
            gt = str(rng.choice(['3', '3.5', '12', '0.5', '2.30', '1', '7', '120']))
            options, kind = [], 'number'
        items.append(QAItem(id=f'{bench}-{k}', task=qtype, question='q', options=options,
                            answer=gt, answer_type=kind, benchmark=bench))
        truth.append((qtype, gt))
    return items, truth


@pytest.mark.parametrize('bench', ['VSI-Bench', 'VSTI-Bench'])
def test_scorer_agrees_with_the_official_rules_on_random_predictions(bench):
    rng = np.random.default_rng(7 if bench == 'VSI-Bench' else 11)
    items, truth = random_items(rng, bench, 3000)
    preds = {i.id: random_prediction(rng) for i in items}
    rows = []
    for item, (qtype, gt) in zip(items, truth):
        expected = t_score(bench, qtype, preds[item.id], gt)
        got = score_item(item, preds[item.id]).score
        assert got == expected, (qtype, repr(preds[item.id]), gt)
        rows.append((qtype, expected))
    # The cases the issue names were drawn, and scored the official way.
    scored = {preds[i.id]: score_item(i, preds[i.id]).score for i in items}
    assert any(p.startswith(' ') for p in scored) and any('\n' in p for p in scored)
    report = score_items(items, preds)
    overall, entries = t_aggregate(bench, rows)
    assert report.benchmarks[bench] == pytest.approx(overall, abs=1e-12)
    got_entries = report.official[bench].entries
    assert set(got_entries) == set(entries)
    for name, value in entries.items():
        assert got_entries[name] == pytest.approx(value, abs=1e-12)
    assert report.parser == 'official'


@pytest.mark.parametrize('text, token', [
    (' A', ''), ('A.\n', 'A.'), ('A\nB', 'A\nB'), ('A...', 'A'), ('A. B', 'A'),
    ('\tA', 'A'), ('3.5.', '3.5'), ('3. ', '3'), ('', ''), ('...', ''), ('A .', 'A')])
def test_official_token_cases(text, token):
    assert official_token(text) == token == t_parse(text)


def mc(id_, task, answer, n_options=4, **meta):
    return QAItem(id=id_, task=task, question='q',
                  options=[f'{"ABCD"[i]}. x{i}' for i in range(n_options)], answer=answer,
                  answer_type='option', benchmark='VSTI-Bench', meta=meta)


def test_vsti_overall_keeps_the_sub_types_separate():
    # nf: 0/1, lr: 3/3, movement: 1/2. Pooling nf+lr gives 3/4 and (0.75 + 0.5) / 2 = 62.5;
    # the official mean over every sub-type is (0 + 1 + 0.5) / 3 = 50.0.
    items = [mc('n1', 'obj_obj_relative_pos', 'A', 2, subtype='near_far')]
    items += [mc(f'l{k}', 'obj_obj_relative_pos', 'B', 2, subtype='left_right')
              for k in range(3)]
    items += [mc('m1', 'camera_movement_direction', 'A'), mc('m2', 'camera_movement_direction', 'C')]
    preds = {'n1': 'B', 'l0': 'B', 'l1': 'B.', 'l2': 'b', 'm1': 'A', 'm2': 'D'}
    report = score_items(items, preds)
    assert report.benchmarks['VSTI-Bench'] == pytest.approx(0.5)
    assert {t.task for t in report.tasks} == {'obj_obj_relative_pos_nf',
                                              'obj_obj_relative_pos_lr',
                                              'camera_movement_direction'}
    rows = [(official_question_type(i.task, i.options, i.meta), s.score)
            for i, s in zip(items, report.items)]
    assert t_aggregate('VSTI-Bench', rows)[0] == pytest.approx(0.5)
    assert 'VSTI-Bench overall (official)' in report.to_table()


def test_pooled_synthetic_tasks_map_to_official_sub_types():
    assert official_question_type('obj_obj_relative_pos', [], {'subtype': 'up_down'}) == \
        'obj_obj_relative_pos_ud'
    for n, version in ((4, 'v1'), (3, 'v2'), (2, 'v3')):
        assert official_question_type('camera_obj_rel_dist', ['x'] * n) == \
            f'camera_obj_rel_dist_{version}'
    assert official_question_type('object_counting') == 'object_counting'
    assert official_question_type('obj_obj_relative_pos', [], {'question_type': 'x'}) == 'x'


def vsi(id_, task, answer):
    return QAItem(id=id_, task=task, question='q', options=['A. a', 'B. b'], answer=answer,
                  answer_type='option', benchmark='VSI-Bench')


def test_a_missing_direction_level_is_reported_not_averaged_away():
    items = [vsi('e', 'object_rel_direction_easy', 'A'),
             vsi('m', 'object_rel_direction_medium', 'A'),
             vsi('r', 'route_planning', 'A')]
    report = score_items(items, {'e': 'A', 'm': 'B', 'r': 'A'})
    # Official: easy present, hard absent -> the thinking-in-space aggregation raises.
    assert report.benchmarks['VSI-Bench'] is None
    assert any('object_rel_direction_hard' in n and 'KeyError' in n for n in report.notes)
    # VLM-3R's copy averages the two levels present: (0.5 + 1) / 2.
    assert report.official['VSI-Bench'].vlm3r_copy_overall == pytest.approx(0.75)
    table = report.to_table()
    assert 'n/a' in table and 'KeyError' in table
    # Easy absent: the levels present are separate tasks of the official overall.
    result = official_overall('VSI-Bench', {'object_rel_direction_medium': 0.0,
                                            'object_rel_direction_hard': 1.0,
                                            'route_planning': 1.0})
    assert result.overall == pytest.approx(2 / 3) and result.notes
    assert result.vlm3r_copy_overall == pytest.approx(0.75)


def test_each_benchmark_reports_its_own_overall_and_the_combined_is_labelled():
    items = [vsi('r', 'route_planning', 'A'), mc('m', 'camera_movement_direction', 'A')]
    report = score_items(items, {'r': 'A', 'm': 'B'})
    assert report.benchmarks == {'VSI-Bench': 1.0, 'VSTI-Bench': 0.0}
    assert report.overall == pytest.approx(0.5)
    doc = report.to_dict()
    assert doc['overall_label'].startswith('combined (ours')
    assert any('not an official number' in n for n in report.notes)


def test_official_and_lenient_parsers_differ_where_the_issue_says():
    item = vsi('r', 'route_planning', 'A')
    assert score_item(item, ' A').score == 0.0  # official: leading space -> ''
    assert score_item(item, ' A', parser='lenient').score == 1.0
    assert score_item(item, 'A.\n').score == 0.0 and score_item(item, 'A\n').score == 1.0
    num = QAItem(id='n', task='object_counting', question='q', options=[], answer='3',
                 answer_type='number', benchmark='VSI-Bench')
    assert score_item(num, '3\nchairs').score == 0.0  # one token '3\nchairs' -> not a float
    assert score_item(num, '3\nchairs', parser='lenient').score == 1.0
    assert math.isclose(score_item(num, '1e400').score, 0.0)
    with pytest.raises(ValueError):
        score_item(num, '3', parser='bogus')
