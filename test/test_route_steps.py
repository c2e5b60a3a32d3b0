"""Tests for text route steps: from paths, from model text, and their agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vlm3r_ros.planning.route_steps import (
    FINAL_STEP, PLACEHOLDER, parse_route_steps, steps_agree, steps_from_path, turn_sequence,
    turn_word)
from vlm3r_ros.planning.trajectory_graph import TrajectoryGraph

L_SHAPE = np.array([(0, 0), (1, 0), (2, 0), (3, 0), (3, 1), (3, 2)], dtype=float)
U_SHAPE = np.array([(0, 0), (2, 0), (2, 1), (0, 1)], dtype=float)


def test_l_shape_left_and_mirrored_right() -> None:
    assert steps_from_path(L_SHAPE, 0.0) == [
        'go forward 3.0 m', 'turn left', 'go forward 2.0 m', FINAL_STEP]
    mirrored = L_SHAPE * [1.0, -1.0]  # seen from above, the corner now bends clockwise
    assert steps_from_path(mirrored, 0.0) == [
        'go forward 3.0 m', 'turn right', 'go forward 2.0 m', FINAL_STEP]


def test_u_shapes() -> None:
    assert steps_from_path(U_SHAPE, 0.0) == [
        'go forward 2.0 m', 'turn left', 'go forward 1.0 m', 'turn left', 'go forward 2.0 m',
        FINAL_STEP]
    assert turn_sequence(steps_from_path(U_SHAPE * [1.0, -1.0], 0.0)) == ['right', 'right']
    # A hairpin (out and straight back) is a 'turn back'.
    hairpin = np.array([(0, 0), (2, 0), (2, 0.05), (0.5, 0.05)])
    assert steps_from_path(hairpin, 0.0, min_segment_m=0.1) == [
        'go forward 2.0 m', 'turn back', 'go forward 1.5 m', FINAL_STEP]


def test_start_heading_sets_the_first_turn() -> None:
    assert steps_from_path(L_SHAPE, math.pi / 2)[0] == 'turn right'  # facing +y, path goes +x
    assert steps_from_path(L_SHAPE, -math.pi / 2)[0] == 'turn left'
    assert steps_from_path(L_SHAPE, math.pi)[0] == 'turn back'
    assert steps_from_path(L_SHAPE, math.radians(30))[0] == 'go forward 3.0 m'  # under 45
    assert steps_from_path(L_SHAPE, None)[0] == 'go forward 3.0 m'
    assert steps_from_path(L_SHAPE, math.radians(30), turn_threshold_deg=20)[0] == 'turn right'


def test_turn_word_boundaries() -> None:
    assert turn_word(math.radians(90)) == 'turn left'
    assert turn_word(math.radians(-90)) == 'turn right'
    assert turn_word(math.radians(134)) == 'turn left'
    assert turn_word(math.radians(136)) == 'turn back'
    assert turn_word(math.radians(-136)) == 'turn back'
    assert turn_word(math.radians(270)) == 'turn right'  # wraps to -90


def test_collinear_and_jitter_are_merged() -> None:
    rng = np.random.default_rng(0)
    xs = np.linspace(0.0, 4.0, 41)
    line = np.stack([xs, rng.uniform(-0.01, 0.01, xs.size)], axis=1)
    assert steps_from_path(line, 0.0) == ['go forward 4.0 m', FINAL_STEP]
    # Duplicated points and a 3rd (height) column are ignored.
    dup = np.array([(0, 0, 1.2), (0, 0, 1.3), (1.26, 0, 1.2), (1.26, 0, 1.1)])
    assert steps_from_path(dup, 0.0) == ['go forward 1.3 m', FINAL_STEP]
    # A 30 degree kink is under the 45 degree threshold: one leg along the path.
    kink = np.array([(0, 0), (2, 0), (2 + math.cos(0.52), math.sin(0.52))])
    assert steps_from_path(kink, 0.0) == ['go forward 3.0 m', FINAL_STEP]
    assert steps_from_path(np.array([(1.0, 1.0)]), 0.0) == [FINAL_STEP]


def test_gradual_arc_gives_one_left_turn_and_keeps_the_distance() -> None:
    t = np.linspace(0.0, math.pi / 2, 31)
    arc = np.stack([2.0 * np.sin(t), 2.0 - 2.0 * np.cos(t)], axis=1)  # quarter circle, left
    steps = steps_from_path(arc, 0.0)
    assert turn_sequence(steps) == ['left']
    dist = sum(float(s.split()[2]) for s in steps if s.startswith('go forward'))
    assert dist == pytest.approx(math.pi, abs=0.11)


def test_landmarks_name_the_end_of_a_leg() -> None:
    marks = [('the door', (3.2, 0.1)), ('the sofa', (3.0, 2.5)), ('the lamp', (1.5, 5.0))]
    assert steps_from_path(L_SHAPE, 0.0, landmarks=marks) == [
        'go forward 3.0 m until the door', 'turn left', 'go forward 2.0 m until the sofa',
        FINAL_STEP]
    assert steps_from_path(L_SHAPE, 0.0, landmarks=marks, landmark_radius_m=0.2)[0] == \
        'go forward 3.0 m'


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError):
        steps_from_path(np.zeros((3, 4)), 0.0)
    with pytest.raises(ValueError):
        steps_from_path(np.zeros((0, 2)), 0.0)
    with pytest.raises(ValueError):
        steps_from_path(L_SHAPE, 0.0, turn_threshold_deg=180)


def test_parse_numbered_model_text() -> None:
    text = ('1. turn left 2. Go forward until the door 3. Turn Right 4. go forward until the '
            'sofa. You have reached the final destination.')
    assert parse_route_steps(text) == [
        'turn left', 'go forward until the door', 'turn right', 'go forward until the sofa',
        FINAL_STEP]
    messy = 'Sure! Here is the plan:\n1) turn right\n2) go forward 2.5 m then turn around'
    assert parse_route_steps(messy) == ['turn right', 'go forward 2.5 m', 'turn back']
    assert parse_route_steps('1. [please fill in] 2. Go forward') == [PLACEHOLDER, 'go forward']


def test_parse_option_style_text() -> None:
    assert parse_route_steps('Turn Back, Turn Left') == ['turn back', 'turn left']
    assert parse_route_steps('B. Turn Around, Turn Right.') == ['turn back', 'turn right']
    assert parse_route_steps('turn left and go forward until the bed') == [
        'turn left', 'go forward until the bed']
    assert parse_route_steps('') == []


def test_steps_agree_scores_turn_sequences() -> None:
    path_steps = steps_from_path(U_SHAPE, 0.0)
    same = steps_agree(path_steps, '1. Go forward until the door 2. Turn left 3. go forward '
                                   '4. turn left 5. go forward. You have reached the final '
                                   'destination.')
    assert same.agree and same.score == 1.0 and same.path_turns == ('left', 'left')
    one_off = steps_agree(path_steps, ['turn left', 'go forward', 'turn right'])
    assert not one_off.agree and one_off.score == pytest.approx(0.5)
    none = steps_agree(['go forward 1.0 m', FINAL_STEP], 'go forward until the end')
    assert none.agree and none.score == 1.0
    disjoint = steps_agree(['turn left'], ['turn back', 'turn back'])
    assert disjoint.score == 0.0


def test_steps_from_planned_graph_path() -> None:
    g = TrajectoryGraph(node_spacing_m=0.25, link_radius_m=0.6)
    for i, (x, y, yaw) in enumerate([(0.1 * k, 0.0, 0.0) for k in range(31)]
                                    + [(3.0, 0.1 * k, math.pi / 2) for k in range(1, 21)]):
        pose = np.eye(4)
        pose[:3, :3] = [[math.sin(yaw), 0, math.cos(yaw)], [-math.cos(yaw), 0, math.sin(yaw)],
                        [0, -1, 0]]
        pose[:3, 3] = [x, y, 1.0]
        g.add_pose(i, i, pose)
    res = g.plan(np.array([3.0, 2.0, 1.0]), goal_frame_id=0)  # back to where we started
    steps = steps_from_path(res.plane_xy, start_heading_rad=math.pi / 2)  # facing +y
    assert steps == ['turn back', 'go forward 2.0 m', 'turn right', 'go forward 3.0 m',
                     FINAL_STEP]
    assert steps_agree(steps, 'Turn Back, Turn Right').agree
