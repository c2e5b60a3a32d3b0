"""Ground-truth QA generation: phrasing, option format, and answers checked independently."""
import dataclasses
import math
import re

import numpy as np
import pytest

from vlm3r_ros.eval.qa import (ALL_TASKS, NUMERIC_TASKS, VSI_TASKS, QAItem, Visibility,
                               compute_visibility, generate_qa, load_qa, sample_frame_indices,
                               save_qa)
from vlm3r_ros.eval.qa_tasks_vsi import official_direction_label
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


FRAME_TASKS = ('camera_obj_abs_dist', 'obj_obj_relative_pos', 'camera_obj_rel_dist')


def make_case(seed, rules='official'):
    scene = make_scene(seed)
    traj = make_trajectory(scene, seconds=30.0, rate_hz=2.0, seed=0)
    vis = compute_visibility(scene, traj, K, W, H, scale=1.0)
    items = generate_qa(scene, traj, K, W, H, seed=0, max_per_task=6, num_frames=16,
                        visibility=vis, rules=rules)
    return scene, traj, vis, items, rules


@pytest.fixture(scope='module', params=[(s, r) for r in ('official', 'exact') for s in (0, 1, 2)],
                ids=lambda p: f'{p[1]}-{p[0]}')
def case(request):
    return make_case(*request.param)


def as_box(obj):
    """The object's oriented box (the official generators' view of a cylinder)."""
    return dataclasses.replace(obj, shape='box')


@pytest.mark.parametrize('rules', ['official', 'exact'])
def test_every_task_is_generated_across_scenes(rules):
    tasks = set()
    for seed in (0, 1, 2):
        tasks |= {it.task for it in make_case(seed, rules)[3]}
    assert tasks == set(ALL_TASKS)


def test_item_format(case):
    scene, traj, vis, items, rules = case
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
            if rules == 'official' and it.task == 'object_rel_distance':
                assert len(it.options) == 4
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
    _, _, _, items, rules = case
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
                                r'these objects \([a-z ,]+\) is the closest to the [a-z ]+\?'
                                + (r'\nIf there are multiple instances of an object category, '
                                   r'measure to the closest\.$' if rules == 'official' else '$')),
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
        # Official: the VSTI-Bench template's wording, object names without articles.
        'obj_obj_relative_pos': (
            r'^In frame \d+ of 16, relative to (the camera, is [a-z ]+ \[Near/Far\] compared '
            r'to [a-z ]+|[a-z ]+, is [a-z ]+ to the \[(Left/Right|Up/Down)\])\?$'
            if rules == 'official' else
            r'^In frame \d+ of 16, relative to (the camera, is the [a-z ]+ \[Near/Far\] '
            r'compared to the [a-z ]+|the [a-z ]+, is the [a-z ]+ to the '
            r'\[(Left/Right|Up/Down)\])\?$'),
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
    scene, traj, vis, items, rules = case
    official = rules == 'official'
    seen = vis.visible(0.003).any(axis=0)
    # Official distances are between oriented boxes (a cylinder counts as its box).
    geom = as_box if official else (lambda o: o)

    def dist(a, b):
        return object_distance(geom(a), geom(b))

    def cam_dist(p, o):
        return point_object_distance(p, geom(o))

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
            assert it.answer == round(dist(oa, ob), 1)
            assert it.answer >= (0.2 if official else 0.3)
        elif it.task == 'object_rel_distance':
            names = re.search(r'objects \((.+)\) is', q).group(1).split(', ')
            (ref,) = _category(scene, re.search(r'closest to the (.+)\?', q).group(1))
            d = {n: min(dist(ref, o) for o in _category(scene, n)) for n in names}
            assert it.answer_text == min(d, key=d.get)
            if official:  # choices listed in option order, all 0.15 m apart
                assert [o[3:] for o in it.options] == names and len(names) == 4
                ds = sorted(d.values())
                assert ds[0] >= 0.15 and min(np.diff(ds)) > 0.15
            else:
                assert sorted(o[3:] for o in it.options) == sorted(names)
        elif it.task.startswith('object_rel_direction'):
            objs = re.search(r'standing by the (.+) and facing the (.+), is the (.+?) to ',
                             q).groups()
            pa, pb, pc = (np.array(_category(scene, n)[0].center[:2]) for n in objs)
            f, v = pb - pa, pc - pa
            # Angle of v seen from f, counter-clockwise (left) positive, via complex numbers.
            ang = math.degrees(np.angle(complex(*v) / complex(*f)))
            side = 'left' if ang > 0 else 'right'
            if official:
                oa, ob, oc = (_category(scene, n)[0] for n in objs)
                for x, y in ((oa, ob), (oa, oc), (ob, oc)):
                    assert 0.3 <= dist(x, y) <= 5.0
                if it.task.endswith('easy'):
                    assert abs(ang) < 135 - 10
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
            if official:  # whole seconds, pairwise more than 1 s apart
                assert min(np.diff([round(t) for t in traj.times[first]])) >= 2
        elif it.task == 'camera_displacement':
            i, j = it.frame_indices
            moved = float(np.linalg.norm(traj.positions[j] - traj.positions[i]))
            assert it.answer == round(moved, 1)
            k1, k2 = it.meta['frame_numbers']
            assert 5 <= k2 - k1 <= 30 if official else k2 - k1 >= 2
        elif it.task == 'camera_movement_direction':
            i, j = it.frame_indices
            if official:  # start camera's own axes: x right, z forward
                dx, _, dz = traj.poses[i, :3, :3].T @ (traj.positions[j] - traj.positions[i])
                if abs(dz) > 1.0 and abs(dz) >= abs(dx):
                    expect = 'Forward' if dz > 0 else 'Backward'
                else:
                    assert abs(dx) > 1.0
                    expect = 'Right' if dx > 0 else 'Left'
            else:
                fwd = traj.poses[i, :2, 2] / np.linalg.norm(traj.poses[i, :2, 2])
                d = traj.positions[j, :2] - traj.positions[i, :2]
                ang = math.degrees(np.angle(complex(*d) / complex(*fwd)))
                expect = ('Forward' if abs(ang) < 45 else 'Backward' if abs(ang) > 135
                          else 'Left' if ang > 0 else 'Right')
            assert it.answer_text == expect
        elif it.task == 'camera_obj_abs_dist':
            (oid,) = it.object_ids
            obj = scene.objects[oid]
            assert f'point of the {obj.category} in frame' in q
            cam = traj.positions[it.frame_indices[0]]
            assert it.answer == round(cam_dist(cam, obj), 1)
        elif it.task == 'camera_obj_rel_dist':
            names = re.search(r'objects \((.+)\) is', q).group(1).split(', ')
            objs = [scene.objects[i] for i in it.object_ids]
            assert sorted(o.category for o in objs) == sorted(names)
            cam = traj.positions[it.frame_indices[0]]
            d = {o.category: cam_dist(cam, o) for o in objs}
            assert it.answer_text == min(d, key=d.get)
            if official:
                ds = sorted(round(v, 2) for v in d.values())
                assert ds[0] >= 0.5 and min(np.diff(ds)) >= 0.15 - 1e-9
                assert it.meta['question_type'] == f'camera_obj_rel_dist_v{5 - len(names)}'
        elif it.task == 'obj_obj_relative_pos':
            pose = traj.poses[it.frame_indices[0]]
            art = '' if official else 'the '
            m = re.search(rf'relative to the camera, is {art}(.+) \[Near/Far\] compared to '
                          rf'{art}(.+)\?', q)
            if m:
                a, b, axis = m.group(1), m.group(2), 2
            else:
                b, a = re.search(rf'relative to {art}(.+), is {art}(.+) to the \[', q).groups()
                axis = 0 if '[Left/Right]' in q else 1
            oa, ob = (scene.objects[i] for i in it.object_ids)
            assert (oa.category, ob.category) == (a, b)
            ca, cb = ((np.array(o.center) - pose[:3, 3]) @ pose[:3, :3] for o in (oa, ob))
            low = {2: 'Near', 0: 'Left', 1: 'Up'}[axis]
            assert (it.answer_text == low) == (ca[axis] < cb[axis])
            if official:  # box corners in the camera frame clear each other by > 0.15 m
                xa, xb = ((o.bounding_corners() - pose[:3, 3]) @ pose[:3, :3][:, axis]
                          for o in (oa, ob))
                assert max(xb.min() - xa.max(), xa.min() - xb.max()) > 0.15
        # Only objects the camera saw; frame questions: seen in that very frame and (official)
        # the only instance of their category with any pixel in it.
        for oid in it.object_ids:
            assert seen[oid]
            if it.task in FRAME_TASKS:
                frame = it.frame_indices[0]
                assert vis.visible(0.003)[frame, oid]
                cat = scene.objects[oid].category
                others = [o.instance_id for o in scene.instances(cat) if o.instance_id != oid]
                if official:
                    assert not vis.pixels[frame, others].any()
                else:
                    assert not others


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
                        visibility_scale=1.0, rules='exact')
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


def test_handmade_scene_official_rules():
    scene, traj = handmade_case()
    items = generate_qa(scene, traj, K, W, H, max_per_task=10_000, num_frames=8,
                        visibility_scale=1.0)
    by_q = {it.question.split('\n')[0]: it for it in items}
    head = 'If I am standing by the bed and facing the tv, is the '
    assert by_q[head + 'sofa to the left or the right of the tv?'].answer_text == 'left'
    assert by_q[head + 'sofa to my left, right, or back?'].answer_text == 'left'
    assert by_q[head + 'refrigerator to my front-left, front-right, back-left, or back-right?'
                ].answer_text == 'front-right'
    # The tv and the toilet are 6.3 m apart (boxes): outside 0.3-5 m, the triple is dropped.
    assert not [it for it in items if it.task.startswith('object_rel_direction')
                and 'toilet' in it.question and 'tv' in it.question]
    assert not [it for it in items if it.task in ('camera_displacement',
                                                  'camera_movement_direction')]


@pytest.mark.parametrize('rules', ['official', 'exact'])
def test_unseen_objects_are_never_asked_about(rules):
    scene, traj = handmade_case()
    # Only the first 8 frames (yaw 0..70 deg, looking towards +x/+y): some objects unseen.
    part = Trajectory(poses=traj.poses[:8], times=traj.times[:8], rate_hz=2.0)
    vis = compute_visibility(scene, part, K, W, H, scale=1.0)
    seen = vis.visible(0.003).any(axis=0)
    assert not seen.all() and seen.any()
    items = generate_qa(scene, part, K, W, H, max_per_task=100, visibility=vis, rules=rules)
    unseen = {scene.objects[i].category for i in np.nonzero(~seen)[0]}
    for it in items:
        for oid in it.object_ids:
            assert seen[oid]
        if rules == 'official' and it.task in FRAME_TASKS:
            # Official frame questions may name a category whose other instance was never
            # seen: the one asked about is the only instance with pixels in that frame.
            for oid in it.object_ids:
                others = [o.instance_id for o in scene.instances(scene.objects[oid].category)]
                assert vis.pixels[it.frame_indices[0], others].sum() == vis.pixels[
                    it.frame_indices[0], oid]
            continue
        for cat in unseen:
            assert f'the {cat}' not in it.question and f'{cat}(s)' not in it.question


def test_generation_is_deterministic_and_tasks_independent():
    scene, traj, vis, items, _ = make_case(1)
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
    with pytest.raises(ValueError):
        generate_qa(scene, traj, K, W, H, visibility=vis, rules='approximate')


def test_sample_frame_indices():
    assert sample_frame_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert sample_frame_indices(3, 32).tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        sample_frame_indices(0, 4)


def test_save_and_load_round_trip(tmp_path):
    scene, traj, vis, items, _ = make_case(0)
    path = save_qa(tmp_path / 'qa.json', items, scene, note='test')
    loaded, doc = load_qa(path)
    assert [i.to_dict() for i in loaded] == [i.to_dict() for i in items]
    assert Scene.from_dict(doc['scene']).to_dict() == scene.to_dict()
    assert doc['note'] == 'test'
    assert isinstance(loaded[0], QAItem)
    (tmp_path / 'bad.json').write_text('{"format": "other"}')
    with pytest.raises(ValueError):
        load_qa(tmp_path / 'bad.json')


# ------------------------------------------------- official rules, one constructed scene each


def cube(i, cat, x, y, side=0.3, z0=0.0, shape='box', yaw=0.0):
    return SceneObject(i, cat, 'red', shape, (x, y, z0 + side / 2), (side, side, side), yaw)


def room(*objs):
    return Scene(seed=7, width=12.0, depth=12.0, height=2.8, objects=tuple(objs))


def path(points, yaw=0.0, pitch=0.0, rate_hz=2.0):
    poses = np.stack([camera_pose(p, yaw, pitch) for p in points])
    return Trajectory(poses=poses, times=np.arange(len(points)) / rate_hz, rate_hz=rate_hz)


STILL = path([(0.0, 0.0, 1.0)])


def ask(scene, traj, task, rules, pixels=None, num_frames=32):
    """Items of one task; every object well visible in every frame unless ``pixels``."""
    if pixels is None:
        pixels = np.full((len(traj), len(scene.objects)), 500, np.int32)
    vis = Visibility(pixels=np.asarray(pixels, np.int32), image_pixels=10_000)
    return generate_qa(scene, traj, K, W, H, tasks=[task], max_per_task=10_000,
                       num_frames=num_frames, visibility=vis, rules=rules)


def test_official_rel_distance_always_four_choices():
    cats = ['bed', 'chair', 'sofa', 'table', 'tv']
    # 1 m cubes in a row, 1 m apart: from an end the distances are 1, 3, 5, 7 m; from any
    # other cube two neighbours tie at 1 m (within 0.15 m: ambiguous).
    row = [cube(i, c, 2.0 * i - 4.0, 0.0, side=1.0) for i, c in enumerate(cats)]
    four = room(*row[:4])
    assert not ask(four, STILL, 'object_rel_distance', 'official')
    assert {len(it.options) for it in ask(four, STILL, 'object_rel_distance', 'exact')} == {3}
    items = ask(room(*row), STILL, 'object_rel_distance', 'official')
    primary = {re.search(r'closest to the (.+)\?', it.question).group(1): it for it in items}
    assert sorted(primary) == ['bed', 'tv']
    assert primary['bed'].answer_text == 'chair' and primary['tv'].answer_text == 'table'
    assert all(len(it.options) == 4 for it in items)


def test_official_direction_sectors():
    def label(level, angle, corners=None):
        return official_direction_label(level, angle, np.full(8, angle) if corners is None
                                        else np.array(corners, float))
    assert label('hard', 45.0) == 'front-left' and label('hard', 200.0) == 'back-right'
    assert label('hard', 300.0) == 'front-right' and label('hard', 95.0) == 'back-left'
    assert label('hard', 85.0) is None  # the official margin: 10 deg below each quadrant's end
    assert label('medium', 160.0) == 'back' and label('medium', 250.0) == 'right'
    assert label('medium', 140.0) is None and label('medium', 5.0) is None
    assert label('easy', 100.0) == 'left' and label('easy', 250.0) == 'right'
    assert label('easy', 180.0) is None  # easy drops the back sector 135-225 deg
    # More than two of the queried box's 8 corners in another sector than its centre.
    assert label('hard', 45.0, [45.0] * 6 + [100.0] * 2) == 'front-left'
    assert label('hard', 45.0, [45.0] * 5 + [100.0] * 3) is None


def test_official_easy_direction_drops_back_sector():
    # By the bed (0, 0) facing the chair (3, 0), the door (-2, 1.2) is 149 deg to the left.
    scene = room(cube(0, 'bed', 0.0, 0.0), cube(1, 'chair', 3.0, 0.0),
                 cube(2, 'door', -2.0, 1.2))
    head = 'If I am standing by the bed and facing the chair, is the door to '

    def answer(task, rules):
        found = [it.answer_text for it in ask(scene, STILL, task, rules)
                 if it.question.startswith(head)]
        return found[0] if found else None
    assert answer('object_rel_direction_easy', 'official') is None
    assert answer('object_rel_direction_easy', 'exact') == 'left'
    assert answer('object_rel_direction_medium', 'official') == 'back'
    assert answer('object_rel_direction_hard', 'official') == 'back-left'


def test_official_direction_triples_outside_box_distance_dropped():
    levels = ['object_rel_direction_easy', 'object_rel_direction_medium',
              'object_rel_direction_hard']
    good = room(cube(0, 'bed', 0.0, 0.0), cube(1, 'chair', 3.0, 0.0), cube(2, 'door', 1.0, 2.0))
    assert all(ask(good, STILL, task, 'official') for task in levels)
    near = room(cube(0, 'bed', 0.0, 0.0), cube(1, 'chair', 3.0, 0.0),
                cube(2, 'door', 0.0, 0.55))  # bed and door boxes 0.25 m apart
    far = room(cube(0, 'bed', 0.0, 0.0), cube(1, 'chair', 5.6, 0.0),
               cube(2, 'door', 1.0, 2.0))  # bed and chair boxes 5.3 m apart
    for scene in (near, far):
        assert not any(ask(scene, STILL, task, 'official') for task in levels)
        assert any(ask(scene, STILL, task, 'exact') for task in levels)


def test_official_displacement_frame_gaps_5_to_30():
    traj = path([(-2.0 + 0.1 * i, 0.0, 1.0) for i in range(40)])
    scene = room(cube(0, 'bed', 0.0, -3.0))

    def gaps(rules):
        items = ask(scene, traj, 'camera_displacement', rules, num_frames=40)
        return {it.meta['frame_numbers'][1] - it.meta['frame_numbers'][0] for it in items}
    assert gaps('official') == set(range(5, 31))
    assert gaps('exact') - set(range(5, 31))


def test_official_movement_direction_camera_frame_over_1m():
    scene = room(cube(0, 'bed', 0.0, -3.0))

    def moves(end, pitch=0.0):
        traj = path([(0.0, 0.0, 1.0), (end[0] / 2, end[1] / 2, 1.0), (end[0], end[1], 1.0)],
                    pitch=pitch)
        return {r: [it.answer_text for it in ask(scene, traj, 'camera_movement_direction', r,
                                                 num_frames=3)] for r in ('official', 'exact')}
    # Level camera looking along +x: 1.5 m forward and 1.2 m left, both axes over 1 m,
    # forward the larger (the exact rule wants one axis twice the other).
    assert moves((1.5, 1.2)) == {'official': ['Forward'], 'exact': []}
    assert moves((0.8, 0.0)) == {'official': [], 'exact': ['Forward']}  # under 1.0 m
    assert moves((0.0, -1.5)) == {'official': ['Right'], 'exact': ['Right']}
    # Looking steeply down, 1.5 m along the floor is 0.54 m along the optical axis.
    assert moves((1.5, 0.0), pitch=-1.2) == {'official': [], 'exact': ['Forward']}


def lr_scene(gap, shape='box'):
    """A bed and a chair 3 m ahead of STILL, the bed to the left with ``gap`` metres
    between them across the view (for a cylinder chair: between bed and cylinder)."""
    chair_y = 0.35 - gap - 0.2  # the bed spans y 0.35-0.65, the chair 0.2 either side
    yaw = math.pi / 4 if shape == 'cylinder' else 0.0
    return room(cube(0, 'bed', 3.0, 0.5, side=0.3, z0=0.8),
                SceneObject(1, 'chair', 'red', shape, (3.0, chair_y, 0.95), (0.4, 0.4, 0.3), yaw))


def test_official_obj_obj_margin_015_with_box_corners():
    assert not ask(lr_scene(0.12), STILL, 'obj_obj_relative_pos', 'official')
    assert {it.answer_text for it in ask(lr_scene(0.12), STILL, 'obj_obj_relative_pos',
                                         'exact')} == {'Left', 'Right'}
    (it,) = ask(lr_scene(0.2), STILL, 'obj_obj_relative_pos', 'official')
    assert it.answer_text == 'Left' and it.meta['question_type'] == 'obj_obj_relative_pos_lr'


def test_official_obj_obj_relative_pos_template_wording():
    (lr,) = ask(lr_scene(0.2), STILL, 'obj_obj_relative_pos', 'official')
    assert lr.question == 'In frame 1 of 1, relative to chair, is bed to the [Left/Right]?'
    scene = room(cube(0, 'bed', 2.0, 0.0, z0=0.8), cube(1, 'chair', 4.0, 0.0, z0=0.8))
    (nf,) = ask(scene, STILL, 'obj_obj_relative_pos', 'official')
    assert nf.question == ('In frame 1 of 1, relative to the camera, is bed [Near/Far] '
                           'compared to chair?')
    assert nf.answer_text == 'Near' and sorted(o[3:] for o in nf.options) == ['Far', 'Near']
    scene = room(cube(0, 'bed', 3.0, 0.0, z0=1.5), cube(1, 'chair', 3.0, 0.0, z0=0.5))
    (ud,) = ask(scene, STILL, 'obj_obj_relative_pos', 'official')
    assert ud.question == 'In frame 1 of 1, relative to chair, is bed to the [Up/Down]?'
    assert ud.answer_text == 'Up'


def test_official_cylinders_measured_through_their_box():
    # Cylinders of radius 0.2 m at (0, 0) and (1, 1): 1.01 m apart, their boxes 0.85 m.
    scene = room(cube(0, 'plant', 0.0, 0.0, side=0.4, shape='cylinder'),
                 cube(1, 'lamp', 1.0, 1.0, side=0.4, shape='cylinder'))
    assert [it.answer for it in ask(scene, STILL, 'object_abs_distance', 'official')] == [0.8]
    assert [it.answer for it in ask(scene, STILL, 'object_abs_distance', 'exact')] == [1.0]
    # A cylinder turned 45 deg: its box reaches 0.28 m across the view, the cylinder 0.2 m,
    # so a 0.2 m gap to the cylinder is 0.12 m to its box (under the 0.15 m margin).
    assert not ask(lr_scene(0.2, 'cylinder'), STILL, 'obj_obj_relative_pos', 'official')
    assert ask(lr_scene(0.2, 'cylinder'), STILL, 'obj_obj_relative_pos', 'exact')
    assert ask(lr_scene(0.3, 'cylinder'), STILL, 'obj_obj_relative_pos', 'official')


def test_official_frame_questions_use_frame_level_uniqueness():
    scene = room(cube(0, 'chair', 3.0, 0.8), cube(1, 'chair', 3.0, -0.8),
                 cube(2, 'table', 4.0, 0.0))
    traj = path([(0.0, 0.0, 1.0)] * 2)
    # Frame 1: one chair seen, the other has no pixel; frame 2: the other chair shows a
    # 5-pixel sliver (too small to ask about, enough to make "the chair" ambiguous).
    pixels = [[500, 0, 500], [500, 5, 500]]

    def asked(rules):
        return sorted(re.search(r'point of the (.+) in (frame \d)', it.question).groups()
                      for it in ask(scene, traj, 'camera_obj_abs_dist', rules, pixels))
    assert asked('official') == [('chair', 'frame 1'), ('table', 'frame 1'),
                                 ('table', 'frame 2')]
    assert asked('exact') == [('table', 'frame 1'), ('table', 'frame 2')]


def test_official_camera_obj_rel_dist_versions():
    # Nearest-point distances from STILL: bed 0.3 (under 0.5 m, never an option),
    # chair 1.0 (the answer), sofa 1.05 (within 0.15 m of the answer), table 1.5, tv 2.0,
    # door 2.5.
    scene = room(cube(0, 'bed', 0.4, 0.0, side=0.2, z0=0.9),
                 cube(1, 'chair', -1.1, 0.0, side=0.2, z0=0.9),
                 cube(2, 'sofa', 0.0, 1.15, side=0.2, z0=0.9),
                 cube(3, 'table', 0.0, -1.6, side=0.2, z0=0.9),
                 cube(4, 'tv', 2.1, 0.0, side=0.2, z0=0.9),
                 cube(5, 'door', -2.6, 0.0, side=0.2, z0=0.9))
    items = ask(scene, STILL, 'camera_obj_rel_dist', 'official')
    by_type = {it.meta['question_type']: it for it in items}
    assert sorted(by_type) == ['camera_obj_rel_dist_v1', 'camera_obj_rel_dist_v2',
                               'camera_obj_rel_dist_v3']
    assert {len(it.options) for it in items} == {2, 3, 4}
    assert all(it.answer_text == 'chair' for it in items)
    assert sorted(o[3:] for o in by_type['camera_obj_rel_dist_v1'].options) == [
        'chair', 'door', 'table', 'tv']
    for it in items:
        names = re.search(r'objects \((.+)\) is', it.question).group(1).split(', ')
        assert names == [o[3:] for o in it.options]  # listed in option order


def test_official_appearance_order_whole_second_margin():
    scene = room(*[cube(i, c, 3.0, 0.6 * i - 1.0) for i, c in
                   enumerate(['bed', 'chair', 'sofa', 'table'])])
    traj = path([(0.0, 0.0, 1.0)] * 30, rate_hz=5.0)

    def orders(first_frames, rules):
        pixels = np.zeros((30, 4), np.int32)
        for j, f in enumerate(first_frames):
            pixels[f:, j] = 500
        return [it.answer_text for it in ask(scene, traj, 'obj_appearance_order', rules, pixels)]
    # First seen at 0, 1.4, 2.6, 4.0 s: whole seconds 0, 1, 3, 4 are not all > 1 s apart.
    assert orders([0, 7, 13, 20], 'official') == []
    assert orders([0, 7, 13, 20], 'exact') == ['bed, chair, sofa, table']
    assert orders([0, 10, 20, 29], 'official') == ['bed, chair, sofa, table']


def test_exact_rules_reproduce_the_earlier_generator():
    # Fingerprint of the items the generator gave before the official rules existed.
    import hashlib
    import json
    scene, traj, vis, _, _ = make_case(1, 'exact')
    items = generate_qa(scene, traj, K, W, H, seed=0, max_per_task=6, num_frames=16,
                        visibility=vis, rules='exact')
    text = json.dumps([[i.id, i.question, i.options, str(i.answer), i.frame_indices,
                        i.object_ids] for i in items])
    assert len(items) == 79
    assert hashlib.sha256(text.encode()).hexdigest() == (
        '2b9d40bf213dcd63ddd62f477ad8a7b76e893d4405b6177d7517d3ddee952385')
