"""Ground-truth QA generation: phrasing, option format, and answers checked independently."""
import math
import re

import numpy as np
import pytest

from vlm3r_ros.eval.qa import (ALL_TASKS, NUMERIC_TASKS, VSI_TASKS, QAItem, compute_visibility,
                               generate_qa, load_qa, sample_frame_indices, save_qa)
from vlm3r_ros.eval.render import intrinsics
from vlm3r_ros.eval.scenes import (Scene, SceneObject, Trajectory, camera_pose, make_scene,
                                   make_trajectory, object_distance, point_object_distance)

W, H = 96, 72
K = intrinsics(W, H)
ROUTE_RE = re.compile(
    r"^You are a robot beginning at the (.+?) facing the (.+?)\. You want to navigate to the "
    r"(.+?)\. You will perform the following actions \(Note: for each \[please fill in\], "
    r"choose either 'turn back,' 'turn left,' or 'turn right\.'\): (.*) You have reached the "
    r"final destination\.$")


def make_case(seed):
    scene = make_scene(seed)
    traj = make_trajectory(scene, seconds=30.0, rate_hz=2.0, seed=0)
    vis = compute_visibility(scene, traj, K, W, H, scale=1.0)
    items = generate_qa(scene, traj, K, W, H, seed=0, max_per_task=6, num_frames=16,
                        visibility=vis)
    return scene, traj, vis, items


@pytest.fixture(scope='module', params=[0, 1, 2])
def case(request):
    return make_case(request.param)


def test_every_task_is_generated_across_scenes():
    tasks = set()
    for seed in (0, 1, 2):
        tasks |= {it.task for it in make_case(seed)[3]}
    assert tasks == set(ALL_TASKS)


def test_item_format(case):
    scene, traj, vis, items = case
    ids = [it.id for it in items]
    assert len(ids) == len(set(ids))
    for it in items:
        assert it.benchmark == ('VSI-Bench' if it.task in VSI_TASKS else 'VSTI-Bench')
        if it.task in NUMERIC_TASKS:
            assert it.answer_type == 'number' and it.options == []
            assert float(it.answer) > 0
        else:
            assert it.answer_type == 'option'
            assert 2 <= len(it.options) <= 4
            labels = [o[:3] for o in it.options]
            assert labels == [f'{"ABCD"[i]}. ' for i in range(len(it.options))]
            texts = [o[3:] for o in it.options]
            assert len(set(texts)) == len(texts)  # distractors differ from the answer
            assert it.answer in 'ABCD'[:len(it.options)]
            assert texts['ABCD'.index(it.answer)] == it.answer_text
        assert len(it.frame_indices) == len(it.frame_times)
        for f, t in zip(it.frame_indices, it.frame_times):
            assert traj.times[f] == t


def test_questions_use_vsibench_phrasing(case):
    _, _, _, items = case
    patterns = {
        'object_counting': r'^How many [a-z ]+\(s\) are in this room\?$',
        'object_abs_distance': (r'^Measuring from the closest point of each object, what is the '
                                r'direct distance between the [a-z ]+ and the [a-z ]+ \(in '
                                r'meters\)\?$'),
        'object_size_estimation': (r'^What is the length of the longest dimension \(length, '
                                   r'width, or height\) of the [a-z ]+, measured in '
                                   r'centimeters\?$'),
        'room_size_estimation': (r'^What is the size of this room \(in square meters\)\?\nIf '
                                 r'multiple rooms are shown, estimate the size of the combined '
                                 r'space\.$'),
        'object_rel_distance': (r'^Measuring from the closest point of each object, which of '
                                r'these objects \([a-z ,]+\) is the closest to the [a-z ]+\?$'),
        'object_rel_direction_easy': (r'^If I am standing by the [a-z ]+ and facing the [a-z ]+, '
                                      r'is the [a-z ]+ to the left or the right of the '
                                      r'[a-z ]+\?$'),
        'object_rel_direction_medium': (r'^If I am standing by the [a-z ]+ and facing the '
                                        r'[a-z ]+, is the [a-z ]+ to my left, right, or back\?\n'
                                        r'An object is to my back if I would have to turn at '
                                        r'least 135 degrees in order to face it\.$'),
        'object_rel_direction_hard': (r'^If I am standing by the [a-z ]+ and facing the [a-z ]+, '
                                      r'is the [a-z ]+ to my front-left, front-right, back-left, '
                                      r'or back-right\?\nThe directions refer to the quadrants of '
                                      r'a Cartesian plane \(if I am standing at the origin and '
                                      r'facing along the positive y-axis\)\.$'),
        'route_planning': ROUTE_RE.pattern,
        'obj_appearance_order': (r'^What will be the first-time appearance order of the '
                                 r'following categories in the video: [a-z ]+(, [a-z ]+){3}\?$'),
        'camera_obj_abs_dist': (r'^What is the approximate distance \(in meters\) between the '
                                r'camera \(or the person filming\) and the nearest point of the '
                                r'[a-z ]+ in frame \d+ of 16\?$'),
        'camera_displacement': (r'^Approximately how far \(in meters\) did the camera move '
                                r'between frame \d+ and frame \d+ of 16\?$'),
        'camera_movement_direction': (r"^During the sequence between frame \d+ and frame \d+ of "
                                      r"16, what was the primary consistent direction of the "
                                      r"camera's movement relative to its orientation at the "
                                      r"start\? The options are \w+, \w+, \w+, and \w+\.$"),
        'obj_obj_relative_pos': (r'^In frame \d+ of 16, relative to (the camera, is the [a-z ]+ '
                                 r'\[Near/Far\] compared to the [a-z ]+|the [a-z ]+, is the '
                                 r'[a-z ]+ to the \[(Left/Right|Up/Down)\])\?$'),
        'camera_obj_rel_dist': (r'^Measuring from the closest point of each object, which of '
                                r'these objects \([a-z ,]+\) is the closest to the camera in '
                                r'frame \d+ of 16\?$'),
    }
    for it in items:
        assert re.match(patterns[it.task], it.question), (it.task, it.question)


def _category(scene, name):
    objs = scene.instances(name)
    assert objs, name
    return objs


def test_answers_recomputed_independently(case):
    scene, traj, vis, items = case
    seen = vis.visible(0.003).any(axis=0)
    for it in items:
        q = it.question
        if it.task == 'object_counting':
            cat = re.match(r'How many (.+)\(s\)', q).group(1)
            assert it.answer == len(_category(scene, cat)) >= 2
        elif it.task == 'object_size_estimation':
            cat = re.search(r'height\) of the (.+), measured', q).group(1)
            (obj,) = _category(scene, cat)
            assert it.answer == round(max(obj.size) * 100)
        elif it.task == 'room_size_estimation':
            assert it.answer == round(scene.width * scene.depth, 1)
        elif it.task == 'object_abs_distance':
            a, b = re.search(r'between the (.+) and the (.+) \(in', q).groups()
            (oa,), (ob,) = _category(scene, a), _category(scene, b)
            assert it.answer == round(object_distance(oa, ob), 1)
        elif it.task == 'object_rel_distance':
            names = re.search(r'objects \((.+)\) is', q).group(1).split(', ')
            (ref,) = _category(scene, re.search(r'closest to the (.+)\?', q).group(1))
            d = {n: min(object_distance(ref, o) for o in _category(scene, n)) for n in names}
            assert it.answer_text == min(d, key=d.get)
            assert sorted(o[3:] for o in it.options) == sorted(names)
        elif it.task.startswith('object_rel_direction'):
            a, b, c = re.search(r'standing by the (.+) and facing the (.+), is the (.+?) to ',
                                q).groups()
            pa, pb, pc = (np.array(_category(scene, n)[0].center[:2]) for n in (a, b, c))
            f, v = pb - pa, pc - pa
            # Angle of v seen from f, counter-clockwise (left) positive, via complex numbers.
            ang = math.degrees(np.angle(complex(*v) / complex(*f)))
            side = 'left' if ang > 0 else 'right'
            if it.task.endswith('easy'):
                assert it.answer_text == side
            elif it.task.endswith('medium'):
                assert it.answer_text == ('back' if abs(ang) >= 135 else side)
            else:
                assert it.answer_text == ('front-' if abs(ang) < 90 else 'back-') + side
        elif it.task == 'route_planning':
            check_route(scene, it)
        elif it.task == 'obj_appearance_order':
            order = it.answer_text.split(', ')
            listed = re.search(r'in the video: (.+)\?', q).group(1).split(', ')
            assert sorted(order) == sorted(listed)
            first = []
            for cat in order:
                cols = [o.instance_id for o in scene.instances(cat)]
                first.append(np.nonzero(vis.visible(0.003)[:, cols].any(axis=1))[0][0])
            assert first == sorted(first) and min(np.diff(traj.times[first])) >= 1.0
        elif it.task == 'camera_displacement':
            i, j = it.frame_indices
            moved = float(np.linalg.norm(traj.positions[j] - traj.positions[i]))
            assert it.answer == round(moved, 1)
        elif it.task == 'camera_movement_direction':
            i, j = it.frame_indices
            fwd = traj.poses[i, :2, 2] / np.linalg.norm(traj.poses[i, :2, 2])
            d = traj.positions[j, :2] - traj.positions[i, :2]
            ang = math.degrees(np.angle(complex(*d) / complex(*fwd)))
            expect = ('Forward' if abs(ang) < 45 else 'Backward' if abs(ang) > 135
                      else 'Left' if ang > 0 else 'Right')
            assert it.answer_text == expect
        elif it.task == 'camera_obj_abs_dist':
            (obj,) = _category(scene, re.search(r'point of the (.+) in frame', q).group(1))
            cam = traj.positions[it.frame_indices[0]]
            assert it.answer == round(point_object_distance(cam, obj), 1)
        elif it.task == 'camera_obj_rel_dist':
            names = re.search(r'objects \((.+)\) is', q).group(1).split(', ')
            cam = traj.positions[it.frame_indices[0]]
            d = {n: point_object_distance(cam, _category(scene, n)[0]) for n in names}
            assert it.answer_text == min(d, key=d.get)
        elif it.task == 'obj_obj_relative_pos':
            pose = traj.poses[it.frame_indices[0]]
            m = re.search(r'relative to the camera, is the (.+) \[Near/Far\] compared to '
                          r'the (.+)\?', q)
            if m:
                a, b, axis = m.group(1), m.group(2), 2
            else:
                b, a = re.search(r'relative to the (.+), is the (.+) to the \[', q).groups()
                axis = 0 if '[Left/Right]' in q else 1
            ca, cb = ((np.array(_category(scene, n)[0].center) - pose[:3, 3]) @ pose[:3, :3]
                      for n in (a, b))
            low = {2: 'Near', 0: 'Left', 1: 'Up'}[axis]
            assert (it.answer_text == low) == (ca[axis] < cb[axis])
        # Only objects the camera saw; frame questions: seen in that very frame.
        for oid in it.object_ids:
            assert seen[oid]
            if it.task in ('camera_obj_abs_dist', 'obj_obj_relative_pos', 'camera_obj_rel_dist'):
                assert vis.visible(0.003)[it.frame_indices[0], oid]


def check_route(scene, it):
    start, facing, goal, body = ROUTE_RE.match(it.question).groups()
    steps = [s.strip().rstrip('.') for s in re.split(r'\d+\. ', body) if s.strip()]
    assert steps[-1] == f'Go forward until the {goal}'
    pos = np.array(scene.instances(start)[0].center[:2])
    heading = np.array(scene.instances(facing)[0].center[:2]) - pos
    turns, pending = [], False
    for step in steps:
        if step == '[please fill in]':
            pending = True
            continue
        target = np.array(scene.instances(step[len('Go forward until the '):])[0].center[:2])
        leg = target - pos
        ang = math.degrees(np.angle(complex(*leg) / complex(*heading)))
        needs_turn = abs(ang) > 40
        assert needs_turn == pending, (it.question, ang)
        if needs_turn:
            turns.append('Turn Back' if abs(ang) > 135
                         else 'Turn Left' if ang > 0 else 'Turn Right')
        pending = False
        heading, pos = leg, target
    assert ', '.join(turns) == it.answer_text


def handmade_case():
    objs = [
        SceneObject(0, 'bed', 'white', 'box', (0.0, -2.5, 0.275), (1.6, 2.0, 0.55), 0.0),
        SceneObject(1, 'tv', 'black', 'box', (0.0, 3.0, 1.3), (1.0, 0.08, 0.6), math.pi),
        SceneObject(2, 'sofa', 'blue', 'box', (-3.0, 0.0, 0.4), (2.0, 0.9, 0.8), -math.pi / 2),
        SceneObject(3, 'refrigerator', 'grey', 'box', (3.0, 2.5, 0.9), (0.7, 0.7, 1.8), 0.0),
        SceneObject(4, 'toilet', 'white', 'box', (3.0, -3.3, 0.375), (0.4, 0.7, 0.75), 0.0),
        SceneObject(5, 'chair', 'red', 'box', (-1.5, 1.5, 0.45), (0.5, 0.5, 0.9), 0.3),
        SceneObject(6, 'chair', 'red', 'box', (1.5, 1.5, 0.45), (0.5, 0.5, 0.9), -0.3),
    ]
    scene = Scene(seed=99, width=8.0, depth=8.0, height=2.8, objects=tuple(objs))
    # Spin on the spot at the room centre: every object comes into view.
    yaws = np.linspace(0.0, 2 * math.pi, 36, endpoint=False)
    poses = np.stack([camera_pose((0.0, 0.0, 1.2), y, -0.25) for y in yaws])
    traj = Trajectory(poses=poses, times=np.arange(36) / 2.0, rate_hz=2.0)
    return scene, traj


def test_handmade_scene_answers():
    scene, traj = handmade_case()
    items = generate_qa(scene, traj, K, W, H, max_per_task=10_000, num_frames=8,
                        visibility_scale=1.0)
    by_q = {it.question.split('\n')[0]: it for it in items}
    assert by_q['How many chair(s) are in this room?'].answer == 2
    assert by_q['What is the length of the longest dimension (length, width, or height) of '
                'the bed, measured in centimeters?'].answer == 200
    assert by_q['What is the size of this room (in square meters)?'].answer == 64.0
    # Bed x in [-0.8, 0.8], toilet x in [2.8, 3.2], y ranges overlap: 2.0 m apart.
    dist = [it for it in items if it.task == 'object_abs_distance'
            and {'bed', 'toilet'} <= set(re.findall(r'the (bed|toilet)', it.question))]
    assert dist and dist[0].answer == 2.0
    head = 'If I am standing by the bed and facing the tv, is the '
    # From the bed centre (0, -2.5) towards the tv (0, 3): the sofa (-3, 0) is 50.2 deg to
    # the left, the fridge (3, 2.5) 31.0 deg right, the toilet (3, -3.3) 104.9 deg right.
    assert by_q[head + 'sofa to the left or the right of the tv?'].answer_text == 'left'
    assert by_q[head + 'sofa to my left, right, or back?'].answer_text == 'left'
    assert by_q[head + 'sofa to my front-left, front-right, back-left, or back-right?'
                ].answer_text == 'front-left'
    assert by_q[head + 'refrigerator to my front-left, front-right, back-left, or back-right?'
                ].answer_text == 'front-right'
    assert by_q[head + 'toilet to my front-left, front-right, back-left, or back-right?'
                ].answer_text == 'back-right'
    assert by_q[head + 'toilet to my left, right, or back?'].answer_text == 'right'
    # No camera motion: no displacement or movement questions.
    assert not [it for it in items if it.task in ('camera_displacement',
                                                  'camera_movement_direction')]
    for it in items:
        if it.task == 'route_planning':
            check_route(scene, it)


def test_unseen_objects_are_never_asked_about():
    scene, traj = handmade_case()
    # Only the first 8 frames (yaw 0..70 deg, looking towards +x/+y): some objects unseen.
    part = Trajectory(poses=traj.poses[:8], times=traj.times[:8], rate_hz=2.0)
    vis = compute_visibility(scene, part, K, W, H, scale=1.0)
    seen = vis.visible(0.003).any(axis=0)
    assert not seen.all() and seen.any()
    items = generate_qa(scene, part, K, W, H, max_per_task=100, visibility=vis)
    unseen = {scene.objects[i].category for i in np.nonzero(~seen)[0]}
    for it in items:
        for oid in it.object_ids:
            assert seen[oid]
        for cat in unseen:
            assert f'the {cat}' not in it.question and f'{cat}(s)' not in it.question


def test_generation_is_deterministic_and_tasks_independent():
    scene, traj, vis, items = make_case(1)
    again = generate_qa(scene, traj, K, W, H, seed=0, max_per_task=6, num_frames=16,
                        visibility=vis)
    assert [i.to_dict() for i in again] == [i.to_dict() for i in items]
    other = generate_qa(scene, traj, K, W, H, seed=1, max_per_task=6, num_frames=16,
                        visibility=vis)
    assert [i.to_dict() for i in other] != [i.to_dict() for i in items]
    only = generate_qa(scene, traj, K, W, H, seed=0, tasks=['route_planning'],
                       max_per_task=6, num_frames=16, visibility=vis)
    assert [i.to_dict() for i in only] == [i.to_dict() for i in items
                                            if i.task == 'route_planning']
    with pytest.raises(ValueError):
        generate_qa(scene, traj, K, W, H, tasks=['object_colour'], visibility=vis)


def test_sample_frame_indices():
    assert sample_frame_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert sample_frame_indices(3, 32).tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        sample_frame_indices(0, 4)


def test_save_and_load_round_trip(tmp_path):
    scene, traj, vis, items = make_case(0)
    path = save_qa(tmp_path / 'qa.json', items, scene, note='test')
    loaded, doc = load_qa(path)
    assert [i.to_dict() for i in loaded] == [i.to_dict() for i in items]
    assert Scene.from_dict(doc['scene']).to_dict() == scene.to_dict()
    assert doc['note'] == 'test'
    assert isinstance(loaded[0], QAItem)
    (tmp_path / 'bad.json').write_text('{"format": "other"}')
    with pytest.raises(ValueError):
        load_qa(tmp_path / 'bad.json')
