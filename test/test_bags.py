"""rosbag2 writing (sqlite3 and MCAP) and reading back what was written."""
import math

import numpy as np
import pytest

from vlm3r_ros.eval.bags import (BAG_METADATA_VERSION, DEFAULT_START_NS, TOPIC_CAMERA_INFO,
                                 TOPIC_COMPRESSED, TOPIC_DEPTH, TOPIC_IMAGE, TOPIC_POSE,
                                 CameraInfoData, bag_metadata, decode_message, pose_message,
                                 read_bag_frames, write_bag)
from vlm3r_ros.eval.qa import load_qa
from vlm3r_ros.eval.render import intrinsics, render
from vlm3r_ros.eval.scenes import Scene, make_scene, make_trajectory

W, H = 64, 48


@pytest.fixture(scope='module')
def scene_traj():
    scene = make_scene(2)
    return scene, make_trajectory(scene, seconds=1.6, rate_hz=5.0, seed=0)


def by_topic(path):
    out = {}
    for topic, stamp, data in read_bag_frames(path):
        out.setdefault(topic, []).append((stamp, data))
    return out


def test_sqlite3_raw_round_trip_is_exact(tmp_path, scene_traj):
    scene, traj = scene_traj
    K = intrinsics(W, H, hfov_deg=75.0)
    res = write_bag(scene, traj, tmp_path / 'out', storage='sqlite3', with_depth=True,
                    with_pose=True, K=K, width=W, height=H, make_qa=False)
    assert res.bag_path == tmp_path / 'out' / 'bag'
    assert (res.bag_path / 'bag.db3').is_file()
    meta = bag_metadata(res.bag_path)
    assert meta['version'] == BAG_METADATA_VERSION == 9
    assert meta['storage_identifier'] == 'sqlite3'
    assert meta['message_count'] == 4 * len(traj)
    got = by_topic(res.bag_path)
    assert set(got) == {TOPIC_IMAGE, TOPIC_CAMERA_INFO, TOPIC_DEPTH, TOPIC_POSE}
    stamps = traj.stamps_ns(DEFAULT_START_NS).tolist()
    for topic in got:
        assert [s for s, _ in got[topic]] == stamps
    for i, pose in enumerate(traj.poses):
        rgb, depth = render(scene, pose, K, W, H)
        assert np.array_equal(got[TOPIC_IMAGE][i][1], rgb)
        assert got[TOPIC_DEPTH][i][1].dtype == np.float32
        assert np.array_equal(got[TOPIC_DEPTH][i][1], depth)
        assert np.allclose(got[TOPIC_POSE][i][1], pose, atol=1e-9)
        info = got[TOPIC_CAMERA_INFO][i][1]
        assert isinstance(info, CameraInfoData)
        assert (info.width, info.height, info.frame_id) == (W, H, 'camera_optical_frame')
        assert np.array_equal(info.K, K) and np.array_equal(info.P[:, :3], K)
        assert info.distortion_model == 'plumb_bob' and not info.D.any()
    assert res.qa_path is None and not (tmp_path / 'out' / 'qa.json').exists()


def test_mcap_compressed_round_trip_is_close(tmp_path, scene_traj):
    scene, traj = scene_traj
    res = write_bag(scene, traj, tmp_path / 'out', storage='mcap', compressed=True,
                    width=W, height=H, jpeg_quality=95, make_qa=False, start_ns=5)
    assert (res.bag_path / 'bag.mcap').is_file()
    meta = bag_metadata(res.bag_path)
    assert (meta['version'], meta['storage_identifier']) == (9, 'mcap')
    types = {t['topic_metadata']['name']: t['topic_metadata']['type']
             for t in meta['topics_with_message_count']}
    assert types == {TOPIC_COMPRESSED: 'sensor_msgs/msg/CompressedImage',
                     TOPIC_CAMERA_INFO: 'sensor_msgs/msg/CameraInfo'}
    got = by_topic(res.bag_path)
    assert [s for s, _ in got[TOPIC_COMPRESSED]] == traj.stamps_ns(5).tolist()
    K = intrinsics(W, H)
    for (_, img), pose in zip(got[TOPIC_COMPRESSED], traj.poses):
        rgb, _ = render(scene, pose, K, W, H)
        assert img.shape == rgb.shape and img.dtype == np.uint8
        diff = np.abs(img.astype(int) - rgb.astype(int))
        assert diff.mean() < 4.0  # JPEG at quality 95: close, not exact
        # Colour order survives (no RGB/BGR swap): channel means agree closely.
        assert np.abs(img.reshape(-1, 3).mean(0) - rgb.reshape(-1, 3).mean(0)).max() < 2.0


def test_qa_json_is_written_beside_the_bag(tmp_path):
    scene = make_scene(1)
    traj = make_trajectory(scene, seconds=20.0, rate_hz=1.0, seed=0)
    res = write_bag(scene, traj, tmp_path / 'out', width=W, height=H, with_pose=True,
                    qa_kwargs={'num_frames': 8})
    assert res.qa_path == tmp_path / 'out' / 'qa.json'
    items, doc = load_qa(res.qa_path)
    assert items and [i.to_dict() for i in items] == [i.to_dict() for i in res.items]
    assert Scene.from_dict(doc['scene']).to_dict() == scene.to_dict()
    assert doc['bag']['metadata_version'] == 9 and doc['bag']['path'] == 'bag'
    assert doc['bag']['pose_topic'] == TOPIC_POSE and doc['bag']['depth_topic'] is None
    assert doc['camera']['K'] == intrinsics(W, H).tolist()
    assert doc['trajectory']['stamps_ns'] == traj.stamps_ns(DEFAULT_START_NS).tolist()
    assert np.allclose(doc['trajectory']['poses'], traj.poses, atol=1e-6)
    with pytest.raises(FileExistsError):
        write_bag(scene, traj, tmp_path / 'out', width=W, height=H)
    with pytest.raises(ValueError):
        write_bag(scene, traj, tmp_path / 'other', storage='rosbag1')


def test_topic_filter(tmp_path, scene_traj):
    scene, traj = scene_traj
    res = write_bag(scene, traj, tmp_path / 'out', width=W, height=H, make_qa=False)
    only = list(read_bag_frames(res.bag_path, topics=[TOPIC_CAMERA_INFO]))
    assert len(only) == len(traj) and {t for t, _, _ in only} == {TOPIC_CAMERA_INFO}
    assert list(read_bag_frames(res.bag_path, topics=['/nothing'])) == []


@pytest.mark.parametrize('angle, axis', [
    (0.0, (0, 0, 1)), (math.pi, (1, 0, 0)), (math.pi, (0, 1, 0)), (math.pi, (0, 0, 1)),
    (2.0, (1, 2, 3)), (-2.9, (0.3, -1, 0.2))])
def test_pose_message_quaternion_round_trip(angle, axis):
    a = np.array(axis, dtype=float) / np.linalg.norm(axis)
    Kx = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    R = np.eye(3) + math.sin(angle) * Kx + (1 - math.cos(angle)) * Kx @ Kx  # Rodrigues
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = R, (1.0, -2.0, 0.5)
    msg = pose_message(pose, 7, 'map')
    o = msg.pose.orientation
    q = np.array([o.x, o.y, o.z, o.w])
    assert np.linalg.norm(q) == pytest.approx(1.0) and q[3] >= 0
    # The message's (x, y, z, w) of a rotation by angle about axis: (sin(angle/2) axis,
    # cos(angle/2)), up to sign; a swapped field order would fail here.
    expect = np.concatenate([math.sin(angle / 2) * a, [math.cos(angle / 2)]])
    assert np.allclose(q, expect, atol=1e-12) or np.allclose(q, -expect, atol=1e-12)
    assert np.allclose(decode_message('geometry_msgs/msg/PoseStamped', msg), pose, atol=1e-12)
