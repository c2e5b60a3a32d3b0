"""vlm3r-replay into a real node, and vlm3r-eval end to end (bag -> node -> services -> scores).

Reading bags back is covered by test_bags.py; here the bags go through ROS.
"""
import json
import subprocess
import sys
import time

import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from ros_support import Collector, client_node, running_node, wait_for
from vlm3r_ros.eval.bags import (TOPIC_CAMERA_INFO, TOPIC_COMPRESSED, TOPIC_IMAGE, TOPIC_POSE,
                                 read_bag_frames, write_bag)
from vlm3r_ros.eval.qa import load_qa
from vlm3r_ros.eval.render import intrinsics
from vlm3r_ros.eval.scenes import make_scene, make_trajectory
from vlm3r_ros.eval.scoring import question_type_of
from vlm3r_ros.msg import SceneStatus
from vlm3r_ros.node.ros_convert import stamp_to_ns
from vlm3r_ros.tools import demo, evaluate
from vlm3r_ros.tools.replay import (NodeMonitor, Replayer, StatusPacer, frame_ordered,
                                    parse_remaps, read_messages)

pytestmark = pytest.mark.ros
W, H = 64, 48


@pytest.fixture(scope='module')
def scene_traj():
    scene = make_scene(3)
    return scene, make_trajectory(scene, seconds=2.0, rate_hz=5.0, seed=3)


def make_bag(tmp_path, scene_traj, storage='sqlite3', compressed=False, **kwargs):
    scene, traj = scene_traj
    kwargs.setdefault('make_qa', False)
    return write_bag(scene, traj, tmp_path / f'{storage}_{int(compressed)}', storage=storage,
                     compressed=compressed, with_pose=True, width=W, height=H, **kwargs)


# ------------------------------------------------------------------ replay building blocks
def test_frame_ordered_puts_colour_frames_last_within_a_stamp(tmp_path, scene_traj):
    res = make_bag(tmp_path, scene_traj)
    raw = list(read_messages(res.bag_path))
    ordered = list(frame_ordered(raw))
    assert sorted(ordered, key=id) == sorted(raw, key=id) and len(raw) == 3 * 10
    assert [m.stamp_ns for m in ordered] == sorted(m.stamp_ns for m in raw)
    for i in range(0, len(ordered), 3):
        group = ordered[i:i + 3]
        assert len({m.stamp_ns for m in group}) == 1
        assert group[-1].topic == TOPIC_IMAGE
        assert {m.topic for m in group[:2]} == {TOPIC_CAMERA_INFO, TOPIC_POSE}
    assert parse_remaps(['/a:=/b/c']) == {'/a': '/b/c'}
    for bad in ('/a', ':=/b', '/a:='):
        with pytest.raises(ValueError):
            parse_remaps([bad])


def test_select_items_and_node_parameters(tmp_path, scene_traj):
    scene = make_scene(3)
    traj = make_trajectory(scene, seconds=20.0, rate_hz=1.0, seed=3)
    res = write_bag(scene, traj, tmp_path / 'qa', storage='mcap', compressed=True,
                    with_pose=True, width=W, height=H, qa_kwargs={'max_per_task': 2})
    info = evaluate.load_bag_dir(tmp_path / 'qa')
    assert (info.image_topic, info.image_base, info.transport) == (
        TOPIC_COMPRESSED, '/camera/image_raw', 'compressed')
    assert (info.pose_topic, info.pose_type, info.depth_topic) == (
        TOPIC_POSE, 'pose_stamped', None)
    assert info.num_frames == 20 and len(info.items) == len(res.items)
    picked = evaluate.select_items(info.items, limit=1)
    assert len(picked) == len({i.task for i in info.items})
    only = evaluate.select_items(info.items, tasks=['object_counting', 'route_planning'])
    assert only and {i.task for i in only} <= {'object_counting', 'route_planning'}
    with pytest.raises(ValueError):
        evaluate.select_items(info.items, tasks=['no_such_task'])
    params = evaluate.node_parameters(info, 'tiny', '/ns', {'keyframe_budget': '8'})
    assert params['image_topic'] == '/ns/camera/image_raw'
    assert params['image_transport'] == 'compressed'
    assert params['camera_info_topic'] == '/ns' + TOPIC_CAMERA_INFO
    assert (params['pose_topic'], params['pose_topic_type']) == ('/ns' + TOPIC_POSE,
                                                                'pose_stamped')
    assert params['keyframe_budget'] == '8' and 'depth_topic' not in params
    with pytest.raises(evaluate.EvalSetupError, match='qa.json'):
        evaluate.load_bag_dir(tmp_path / 'nothing')


class FakeMonitor:
    """Stands in for NodeMonitor: the node counts ``count`` frames; ``status()`` is a new
    status arriving now (``updates`` and ``status_mono`` as NodeMonitor keeps them)."""

    period_s = 0.05

    def __init__(self):
        self.count = 100  # frames the node had before the replay
        self.updates = 0
        self.status_mono = None

    def status(self):
        self.updates += 1
        self.status_mono = time.monotonic()

    def ingested(self):
        return self.count

    processed = ingested

    def wait(self, predicate, timeout_s, poll_s=0.01):
        end = time.monotonic() + timeout_s
        while not predicate(self):
            if time.monotonic() >= end:
                return False
            time.sleep(poll_s)
        return True


def test_pacer_writes_off_lost_frames_at_the_next_status_and_times_out_per_frame():
    monitor = FakeMonitor()
    pacer = StatusPacer(monitor, 'ingest', window=3, timeout_s=5.0, latency_s=0.1)
    assert pacer.start(1.0) and pacer.done() == 0
    monitor.count += 1  # frame 1 arrives
    assert pacer(1) and pacer(2) and pacer(3)  # window 3: nothing to wait for
    monitor.count += 1  # one more arrives, one is lost on the way
    monitor.status()  # too soon after the frames went out: says nothing about them yet
    assert pacer.done() == 2
    time.sleep(0.15)
    started = time.monotonic()
    monitor.status()  # a status well after frame 3 went out still misses one frame
    assert pacer.finish(3) and time.monotonic() - started < 0.5  # written off, no timeout
    assert pacer.lost == 1 and pacer.timeouts == 0 and pacer.done() == 3
    # No status ever counts frame 4: it times out after timeout_s and the replay goes on.
    slow = StatusPacer(monitor, 'ingest', window=1, timeout_s=0.2, max_timeouts=2)
    assert slow.start(1.0)
    started = time.monotonic()
    assert not slow(1) and not slow(2)
    assert 0.35 <= time.monotonic() - started < 1.5
    assert slow.timeouts == 2 and slow.given_up == 2 and not slow.enabled  # node silent
    geometry = StatusPacer(FakeMonitor(), 'geometry', window=1, timeout_s=0.2,
                           max_timeouts=2)
    assert geometry.start(1.0)
    assert not geometry(1)
    geometry.monitor.status()  # the node is alive, only its encoder is slow
    assert not geometry(2) and geometry.enabled and geometry.timeouts == 2
    assert geometry.lost == 0  # a slow encoder is not a loss


# ------------------------------------------------------------------ replay into the node
@pytest.mark.parametrize('storage, compressed', [
    ('sqlite3', False), ('mcap', True), ('sqlite3', True), ('mcap', False)])
def test_replay_delivers_every_frame(tmp_path, scene_traj, storage, compressed):
    res = make_bag(tmp_path, scene_traj, storage, compressed)
    frames = [img for _, _, img in read_bag_frames(
        res.bag_path, [TOPIC_COMPRESSED if compressed else TOPIC_IMAGE])]
    # Relative topic parameters resolve inside the node's test namespace.
    with running_node(model_profile='none', image_transport='compressed' if compressed
                      else 'raw', camera_info_topic='camera/camera_info',
                      pose_topic='camera/pose', pose_topic_type='pose_stamped') \
            as (node, ns), client_node() as client:
        image_out = f'{ns}/camera/image_raw' + ('/compressed' if compressed else '')
        remaps = {TOPIC_COMPRESSED if compressed else TOPIC_IMAGE: image_out,
                  TOPIC_CAMERA_INFO: f'{ns}/camera/camera_info', TOPIC_POSE: f'{ns}/camera/pose'}
        pacer = StatusPacer(NodeMonitor(client, f'{ns}/vlm3r_node'), 'ingest', window=2)
        assert pacer.start(10.0)
        player = Replayer(client, res.bag_path, rate=0.0, remaps=remaps, wait_ingested=pacer)
        assert player.wait_for_subscribers(10.0, list(remaps))
        assert player.play() == 3 * len(frames) == player.published
        assert player.frames == len(frames) == 10
        assert pacer.finish(player.frames) and pacer.timeouts == 0
        status = pacer.monitor.status
        assert (status.frames_received, status.frames_rejected) == (10, 0)
        assert status.buffer_length == 10 and status.buffer_resets == 0
        records = node.engine.buffer.snapshot()
        stamps = [m.stamp_ns for m in read_messages(res.bag_path, {TOPIC_POSE})]
        assert [r.stamp_ns for r in records] == stamps
        K = intrinsics(W, H)
        for record, image in zip(records, frames):
            # Raw: the rendered pixels; compressed: the node decodes the bag's JPEG bytes
            # with the same codec as read_bag_frames, so equality is exact either way.
            assert np.array_equal(record.image, image)
        # camera_info arrives and applies. (Not necessarily to the first frames: the node
        # does not order topics against each other, so an image may be taken before the
        # camera_info published just ahead of it.)
        assert np.allclose(node._intrinsics.matrix(), K)
        assert records[-1].intrinsics is not None and np.allclose(records[-1].intrinsics, K)
        assert len(node.engine.poses) == 10


def replay_cli(bag, ns, *extra):
    return subprocess.run(
        [sys.executable, '-m', 'vlm3r_ros.tools.replay', str(bag), '--rate', '0',
         '--paced', '--node', f'{ns}/vlm3r_node',
         '--remap', f'{TOPIC_IMAGE}:={ns}/camera/image_raw', *extra],
        capture_output=True, text=True, timeout=60)


def test_replay_cli_paced_with_clock(tmp_path, scene_traj):
    res = make_bag(tmp_path, scene_traj)
    bag_stamps = {m.stamp_ns for m in read_messages(res.bag_path)}
    with running_node(model_profile='none') as (node, ns), client_node() as client:
        clock = Collector(client, Clock, '/clock',
                          QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
        statuses = Collector(client, SceneStatus, f'{ns}/vlm3r_node/status')
        statuses.wait()
        proc = replay_cli(res.bag_path, ns, '--clock')
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert 'published 30 messages (10 frames) in 1 loop(s)' in proc.stdout, proc.stdout
        assert 'timeout' not in proc.stdout
        status = statuses.wait(lambda m: m.frames_received >= 10)
        assert status.frames_received == 10 and status.buffer_length == 10
        # One /clock message per bag message, carrying its log time.
        assert wait_for(lambda: len(clock.messages) >= 30)
        assert {stamp_to_ns(m.clock) for m in clock.messages} == bag_stamps


def test_replay_cli_loop_resets_the_buffer(tmp_path, scene_traj):
    res = make_bag(tmp_path, scene_traj)
    with running_node(model_profile='none') as (node, ns), client_node() as client:
        statuses = Collector(client, SceneStatus, f'{ns}/vlm3r_node/status')
        statuses.wait()
        proc = replay_cli(res.bag_path, ns, '--loop', '2')
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert 'published 60 messages (20 frames) in 2 loop(s)' in proc.stdout, proc.stdout
        status = statuses.wait(lambda m: m.frames_received >= 20)
        assert status.frames_received == 20 and status.frames_rejected == 0
        # The second loop's stamps jump back by the bag's length: one buffer reset.
        assert status.buffer_resets == 1 and status.buffer_length == 10


def test_replay_cli_rejects_a_missing_bag(tmp_path):
    proc = subprocess.run([sys.executable, '-m', 'vlm3r_ros.tools.replay',
                           str(tmp_path / 'none')], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and 'cannot read' in proc.stdout


# ------------------------------------------------------------------ evaluation end to end
def test_eval_end_to_end_with_the_tiny_model(tmp_path):
    scene = make_scene(3)
    traj = make_trajectory(scene, seconds=24.0, rate_hz=0.5, seed=3)  # 12 frames
    write_bag(scene, traj, tmp_path / 'data', width=96, height=72, with_pose=True,
              qa_kwargs={'max_per_task': 1, 'num_frames': 8})
    items, _ = load_qa(tmp_path / 'data' / 'qa.json')
    tasks = {i.task for i in items}
    assert len(tasks) >= 12  # nearly every benchmark task, one question each
    out = tmp_path / 'eval'
    code = evaluate.main([str(tmp_path / 'data'), '--launch', '--profile', 'tiny',
                          '--out', str(out)])
    assert code == evaluate.EXIT_OK
    results = json.loads((out / 'results.json').read_text())
    # Pooled synthetic tasks are scored under their official sub-types (nf/lr/ud, v1-3).
    assert {t['task'] for t in results['tasks']} == {question_type_of(i) for i in items}
    assert sum(t['n'] for t in results['tasks']) == len(items)
    assert results['parser'] == 'official'
    assert results['errors'] == {'OK': len(items)}
    assert results['run']['model_state'] == 'READY' and results['run']['launched']
    replay = results['run']['replay']
    assert replay['frames'] == 12 and replay['pace'] == 'geometry'
    assert replay['geometry_frames'] == 12 and replay['settled']
    lines = [json.loads(line) for line in (out / 'answers.jsonl').read_text().splitlines()]
    assert [a['id'] for a in lines] == [i.id for i in items]
    for answer, item in zip(lines, items):
        assert answer['error_name'] == 'OK' and answer['error_code'] == 0
        assert answer['ground_truth'] == item.answer and answer['question'] == item.question
        assert answer['keyframes'] >= 1
    csv_rows = (out / 'results.csv').read_text().splitlines()
    assert csv_rows[0].startswith('row,task') and len(csv_rows) > len(tasks)
    assert (out / 'scores.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert 'shutting down' in (out / 'node.log').read_text()


def test_eval_setup_failures_exit_1(tmp_path, scene_traj):
    assert evaluate.main([str(tmp_path / 'missing')]) == evaluate.EXIT_SETUP
    scene = make_scene(3)
    traj = make_trajectory(scene, seconds=20.0, rate_hz=1.0, seed=3)
    write_bag(scene, traj, tmp_path / 'd', width=W, height=H)
    assert evaluate.main([str(tmp_path / 'd'), '--tasks', 'bogus']) == evaluate.EXIT_SETUP
    assert evaluate.main([str(tmp_path / 'd'), '--node', '/nobody_here',
                          '--ready-timeout', '1']) == evaluate.EXIT_SETUP


def test_demo_bag_is_reused_only_with_the_same_settings(tmp_path):
    settings = dict(demo.DEMO_SETTINGS, seconds=20.0, rate_hz=1.0, width=W, height=H)
    info, fresh = demo.ensure_demo_bag(tmp_path / 'data', settings)
    assert fresh and info.num_frames == 20 and info.items
    again, fresh = demo.ensure_demo_bag(tmp_path / 'data', settings)
    assert not fresh and [i.id for i in again.items] == [i.id for i in info.items]
    changed, fresh = demo.ensure_demo_bag(tmp_path / 'data', dict(settings, rate_hz=0.5))
    assert fresh and changed.num_frames == 10
    goal, centre = demo.route_goal(changed)
    assert goal.startswith('the ') and centre is not None and centre.shape == (3,)
