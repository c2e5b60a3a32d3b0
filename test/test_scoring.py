"""VSI-Bench scoring against hand-computed values."""
import csv
import json

import numpy as np
import pytest

from vlm3r_ros.eval.qa import QAItem
from vlm3r_ros.eval.scoring import (MRA_THRESHOLDS, best_constant_mra, mean_relative_accuracy,
                                    plot_bar_chart, score_item, score_items)


def num(id_, task, answer):
    return QAItem(id=id_, task=task, question='q', options=[], answer=answer,
                  answer_type='number', benchmark='VSI-Bench', answer_text=str(answer))


def mc(id_, task, answer, n_options=4):
    opts = [f'{"ABCD"[i]}. x{i}' for i in range(n_options)]
    return QAItem(id=id_, task=task, question='q', options=opts, answer=answer,
                  answer_type='option', benchmark='VSI-Bench')


def test_thresholds_are_the_reference_ones():
    assert MRA_THRESHOLDS.tolist() == pytest.approx([0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8,
                                                     0.85, 0.9, 0.95])


@pytest.mark.parametrize('pred, gt, expected', [
    # Exact: relative error 0 passes all 10 thresholds.
    (10.0, 10.0, 1.0),
    # |10.3-10|/10 = 0.03 <= 1-t for every t up to 0.95 (0.05): 10/10.
    (10.3, 10.0, 1.0),
    # 0.12 <= 1-t  <=>  t <= 0.88: t = .50 .55 .60 .65 .70 .75 .80 .85 -> 8/10.
    (11.2, 10.0, 0.8),
    # 0.32 <= 1-t  <=>  t <= 0.68: t = .50 .55 .60 .65 -> 4/10.
    (6.8, 10.0, 0.4),
    # 0.39 -> t <= 0.61: .50 .55 .60 -> 3/10.
    (6.1, 10.0, 0.3),
    # 0.45 -> t <= 0.55: .50 .55 -> 2/10 (gt 2 m, prediction 2.9 m).
    (2.9, 2.0, 0.2),
    # 0.6 > 0.5 = the loosest tolerance -> 0.
    (4.0, 10.0, 0.0),
    (16.0, 10.0, 0.0),
    # 3 chairs predicted as 4: 1/3 = 0.333 -> t <= 0.667: .50 .55 .60 .65 -> 4/10.
    (4.0, 3.0, 0.4),
    # Boundary as the reference computes it in float64: 0.2 <= 1 - 0.8 is False because
    # 1 - 0.8 = 0.19999999999999996, so t = 0.8 fails: .50 .. .75 -> 6/10.
    (8.0, 10.0, 0.6),
    (float('nan'), 10.0, 0.0),
])
def test_mra_hand_computed(pred, gt, expected):
    assert mean_relative_accuracy(pred, gt) == pytest.approx(expected)


def test_mra_rejects_zero_ground_truth():
    with pytest.raises(ValueError):
        mean_relative_accuracy(1.0, 0.0)


@pytest.mark.parametrize('text, official, lenient', [
    ('B', 1.0, 1.0), ('b', 1.0, 1.0), ('B.', 1.0, 1.0), ('B. x1', 1.0, 1.0),
    ('B..', 1.0, 0.0),  # official strips every trailing dot, lenient one
    ('  B  ', 0.0, 1.0),  # official: a leading space gives an empty first token
    ('B.\n', 0.0, 1.0),  # official strips the dots before the newline: 'B.'
    ('A', 0.0, 0.0), ('x1', 0.0, 0.0), ('E', 0.0, 0.0), ('', 0.0, 0.0),
    ('The answer is B', 0.0, 0.0),
])
def test_exact_letter_match(text, official, lenient):
    item = mc('i', 'object_rel_distance', 'B')
    assert score_item(item, text).score == official
    assert score_item(item, text, parser='lenient').score == lenient


def test_numeric_parsing_takes_the_first_token():
    item = num('i', 'object_abs_distance', 3.5)
    assert score_item(item, '3.5 meters').score == 1.0
    assert score_item(item, '3.5.').score == 1.0
    assert score_item(item, 'about 3.5').score == 0.0
    assert score_item(item, 3.5).score == 1.0
    missing = score_item(item, None)
    assert missing.score == 0.0 and missing.missing


def test_best_constant_mra_by_hand():
    # One value: answering it exactly scores 1.
    assert best_constant_mra([10.0]) == (10.0, 1.0)
    # [1, 1, 10]: answering 1 scores 1, 1, 0 -> 2/3; nothing is close to both 1 and 10.
    assert best_constant_mra([1.0, 1.0, 10.0])[1] == pytest.approx(2 / 3)
    # [10, 12]: 19/20 would need c within 5% of one and 10% of the other:
    # [9.5, 10.5] vs [10.8, 13.2] and [11.4, 12.6] vs [9, 11] do not meet, so 18/20.
    assert best_constant_mra([10.0, 12.0])[1] == pytest.approx(0.9)


def test_report_per_task_overall_and_chance():
    items = [
        num('c1', 'object_counting', 3), num('c2', 'object_counting', 10),
        num('d1', 'object_abs_distance', 2.0),
        mc('r1', 'object_rel_distance', 'A'), mc('r2', 'object_rel_distance', 'B'),
        mc('e1', 'object_rel_direction_easy', 'A', 2),
        mc('m1', 'object_rel_direction_medium', 'C', 3),
        mc('h1', 'object_rel_direction_hard', 'D'),
        mc('v1', 'camera_movement_direction', 'B'),
    ]
    items[-1].benchmark = 'VSTI-Bench'
    preds = {'c1': '3', 'c2': '12',  # exact -> 1.0; |12-10|/10 = 0.2 -> 0.6 (see above)
             'd1': '2.9',  # |2.9-2|/2 = 0.45 -> 0.2
             'r1': 'A', 'r2': 'C',  # right, wrong -> 0.5
             'e1': 'A', 'm1': 'A', 'h1': 'D',  # right, wrong, right
             }  # v1 missing -> 0
    rep = score_items(items, preds)
    scores = {t.task: t.score for t in rep.tasks}
    # Counting: (1.0 + 0.6) / 2.
    assert scores['object_counting'] == pytest.approx(0.8)
    assert scores['object_abs_distance'] == pytest.approx(0.2)
    assert scores['object_rel_distance'] == pytest.approx(0.5)
    assert scores['object_rel_direction_easy'] == 1.0
    assert scores['object_rel_direction_medium'] == 0.0
    assert scores['camera_movement_direction'] == 0.0
    groups = {g.task: g for g in rep.groups}
    assert 'object_rel_direction_easy' not in groups
    assert groups['object_rel_direction'].score == pytest.approx(2 / 3)
    # VSI groups: counting .8, abs .2, rel dist .5, direction 2/3; VSTI: movement 0.
    assert rep.benchmarks['VSI-Bench'] == pytest.approx((0.8 + 0.2 + 0.5 + 2 / 3) / 4)
    assert rep.benchmarks['VSTI-Bench'] == 0.0
    assert rep.overall == pytest.approx((0.8 + 0.2 + 0.5 + 2 / 3 + 0.0) / 5)
    by_task = {t.task: t for t in rep.tasks}
    assert by_task['camera_movement_direction'].missing == 1
    # Chance: MC = 1/options; direction group = mean(1/2, 1/3, 1/4).
    assert by_task['object_rel_distance'].chance == pytest.approx(0.25)
    assert by_task['object_rel_distance'].chance_frequency == pytest.approx(0.5)  # A once, B once
    assert groups['object_rel_direction'].chance == pytest.approx((1 / 2 + 1 / 3 + 1 / 4) / 3)
    # Numeric chance = best constant MRA: counting [3, 10] -> nothing within 50% of both:
    # the best constant answers one exactly, 10/20 = 0.5.
    assert by_task['object_counting'].chance == pytest.approx(0.5)
    assert by_task['object_counting'].chance_random is None
    assert by_task['object_abs_distance'].chance == 1.0


def test_report_outputs(tmp_path):
    items = [num('a', 'room_size_estimation', 20.0), mc('b', 'route_planning', 'C', 3)]
    rep = score_items(items, {'a': '21', 'b': 'c'})
    table = rep.to_table()
    assert 'room_size_estimation' in table and 'route_planning' in table and 'overall' in table
    doc = json.loads(rep.to_json())
    assert doc['overall'] == pytest.approx(rep.overall)
    assert {t['task'] for t in doc['tasks']} == {'room_size_estimation', 'route_planning'}
    assert len(doc['items']) == 2
    with open(rep.to_csv(tmp_path / 'r.csv'), newline='') as fh:
        rows = list(csv.DictReader(fh))
    assert [r['task'] for r in rows if r['row'] == 'task'] == ['room_size_estimation',
                                                               'route_planning']
    assert float(rows[-1]['score']) == pytest.approx(rep.overall)
    png = plot_bar_chart(rep, tmp_path / 'chart.png')
    data = png.read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 2000


def test_score_items_validates():
    with pytest.raises(ValueError):
        score_items([], {})
    with pytest.raises(ValueError):
        score_items([num('a', 'object_counting', 2), num('a', 'object_counting', 3)], {})
    assert np.isclose(score_items([num('a', 'object_counting', 2)], {'a': '2'}).overall, 1.0)
