"""Navigation outputs and input hygiene on a real ROS graph (rclpy + Fast DDS).

A rendered bag is replayed with /clock into a node on sim time: ~/odometry, ~/cloud and
~/free_space come out in map_frame, stamped with the frames' time and bounded in size; the
route Path follows Nav2's FollowPath conventions; frames older than max_input_age_s are
dropped and counted, and stamps far from the node clock are reported.
"""
import math
import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from nav_msgs.msg import OccupancyGrid, Odometry, Path
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import PointCloud2

from ros_support import Collector, call, client_node, publish_frames, running_node, wait_for
from vlm3r_ros.eval.bags import TOPIC_IMAGE, TOPIC_POSE, write_bag
from vlm3r_ros.eval.scenes import make_scene, make_trajectory
from vlm3r_ros.msg import SceneStatus
from vlm3r_ros.node.nav_convert import cloud_arrays, follow_path_problems
from vlm3r_ros.node.ros_convert import ns_to_stamp, stamp_to_ns
from vlm3r_ros.planning.occupancy import FREE
from vlm3r_ros.srv import PlanRoute
from vlm3r_ros.tools.replay import Replayer, read_messages

pytestmark = pytest.mark.ros
# per_query: no visual tokens per frame, so the geometry worker keeps up with the bag.
TINY = dict(model_profile='tiny', geometry_rate_hz=100.0, cache_mode='per_query')
NAV = dict(publish_odometry=True, publish_cloud=True, publish_free_space=True,
           cloud_period_s=0.2, cloud_max_points=400, use_sim_time=True)
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     reliability=ReliabilityPolicy.RELIABLE)
DEEP = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    scene = make_scene(3)
    traj = make_trajectory(scene, seconds=2.4, rate_hz=5.0, seed=3)
    return write_bag(scene, traj, tmp_path_factory.mktemp('nav') / 'b', with_pose=True,
                     width=64, height=48, make_qa=False)


class SimClock:
    """Publish /clock at 1x from a settable base while not paused (the node runs on sim
    time: its status and map timers only fire while this time advances)."""

    def __init__(self, node, start_ns):
        self.pub = node.create_publisher(Clock, '/clock', 10)
        self.base_ns, self.t0, self.rate = start_ns, time.monotonic(), 1.0
        self.paused, self.stop = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def set(self, ns):
        self.base_ns, self.t0 = ns, time.monotonic()

    def _run(self):
        while not self.stop.wait(0.02):
            if not self.paused.is_set():
                now = self.base_ns + int((time.monotonic() - self.t0) * self.rate * 1e9)
                try:
                    self.pub.publish(Clock(clock=ns_to_stamp(now)))
                except Exception:  # noqa: BLE001 - the test's node is gone (test failed)
                    return

    def close(self):
        self.stop.set()
        self.thread.join(1.0)


def replay(client, node, ns, bag, topics, remaps):
    """Play the bag at half speed on a /clock that runs along with it (as ``ros2 bag play
    --clock``): from 30 s before the bag while the model loads, then from its first stamp.
    Returns once the geometry worker is idle."""
    stamps = [m.stamp_ns for m in read_messages(bag.bag_path)]
    clock = SimClock(client, stamps[0] - 30_000_000_000)
    statuses = Collector(client, SceneStatus, f'{ns}/vlm3r_node/status')
    statuses.wait(lambda m: m.model_state == SceneStatus.MODEL_READY, timeout=60)
    player = Replayer(client, bag.bag_path, rate=0.5, remaps=remaps, topics=topics)
    assert player.wait_for_subscribers(10.0, [TOPIC_IMAGE])
    clock.set(stamps[0])
    clock.rate = 0.5  # along with the bag
    player.play()
    counts = []

    def idle():
        counts.append(node.engine.status().geometry_frames)
        return len(counts) > 10 and counts[-1] == counts[-10] and node.engine._pending is None

    assert wait_for(idle, 30, period=0.05)
    return player, clock


def test_replayed_bag_gives_odometry_cloud_and_grid_in_map_frame(bag):
    frame_stamps = [m.stamp_ns for m in read_messages(bag.bag_path, {TOPIC_IMAGE})]
    with running_node(**NAV, **TINY) as (node, ns), client_node() as client:
        odometry = Collector(client, Odometry, f'{ns}/vlm3r_node/odometry', DEEP)
        player, clock = replay(client, node, ns, bag, {TOPIC_IMAGE},
                               {TOPIC_IMAGE: f'{ns}/camera/image_raw'})
        processed = node.engine.status().geometry_frames
        assert player.frames == len(frame_stamps) == 12 and processed >= 6
        # Odometry: one per processed frame, the frame's stamp, map -> camera frame.
        assert wait_for(lambda: len(odometry.messages) >= processed, 10)
        odom = list(odometry.messages)
        stamps = [stamp_to_ns(m.header.stamp) for m in odom]
        assert set(stamps) <= set(frame_stamps) and stamps == sorted(set(stamps))
        assert all(m.header.frame_id == 'map' and m.child_frame_id == 'camera_optical_frame'
                   for m in odom)
        record = node.engine.buffer.snapshot()[-1]
        last = odom[-1].pose.pose.position
        np.testing.assert_allclose([last.x, last.y, last.z], record.pose[:3, 3], atol=1e-6)
        for m in odom:
            cov = np.array(m.pose.covariance).reshape(6, 6)
            assert np.all(np.diag(cov) > 0) and cov[0, 0] <= 0.05 ** 2 + 1e-12
            assert np.count_nonzero(cov - np.diag(np.diag(cov))) == 0
        assert any(abs(m.twist.twist.linear.z) > 0 for m in odom[1:])  # the camera moved
        # Cloud and grid: latched, so a subscriber arriving now still gets them.
        total = node.engine.cloud.snapshot().total
        with client_node() as late:
            clouds = Collector(late, PointCloud2, f'{ns}/vlm3r_node/cloud', LATCHED)
            grids = Collector(late, OccupancyGrid, f'{ns}/vlm3r_node/free_space', LATCHED)
            newest = max(stamps)
            cloud = clouds.wait(lambda m: stamp_to_ns(m.header.stamp) == newest, timeout=10)
            grid = grids.wait(lambda m: stamp_to_ns(m.header.stamp) == newest, timeout=10)
        assert cloud.header.frame_id == 'map' and cloud.height == 1
        assert total > 400 and cloud.width == 400  # bounded by cloud_max_points
        assert [f.name for f in cloud.fields] == ['x', 'y', 'z', 'rgb']
        assert cloud.point_step == 16 and len(cloud.data) == 16 * cloud.width
        xyz, rgb = cloud_arrays(cloud)
        assert np.all(np.isfinite(xyz)) and rgb.std() > 0  # coloured from the frames
        assert grid.header.frame_id == 'map' and grid.info.resolution == pytest.approx(0.1)
        assert grid.info.width * grid.info.height == len(grid.data) > 0
        assert grid.info.width <= 1001 and grid.info.height <= 1001
        cells = np.array(grid.data, dtype=np.int8)
        assert np.count_nonzero(cells == FREE) > 0 and set(np.unique(cells)) <= {-1, 0, 100}
        # CUT3R's world has y down (up_axis auto): the grid's z axis is that up.
        q = grid.info.origin.orientation
        assert math.isclose(q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w, 1.0, rel_tol=1e-9)
        # Sim time: the status is stamped by /clock (the bag's time), not the wall clock.
        status = Collector(client, SceneStatus, f'{ns}/vlm3r_node/status').wait()
        assert abs(stamp_to_ns(status.header.stamp) - frame_stamps[-1]) < 5e9
        assert status.frames_too_old == 0 and abs(status.input_stamp_age_s) < 1.0
        clock.close()


def test_route_path_follows_nav2_conventions(bag):
    # The seeded random LMM localises 'the door' at a keyframe away from the start in this
    # bag among the keyframes of 0.1 m coverage voxels (the shipped model, or the 0.5 m
    # RGB-only default's keyframes, give the start itself: a one-pose path); this test is
    # about the path's conventions, not about localisation.
    with running_node(pose_topic='camera/pose', pose_topic_type='pose_stamped',
                      publish_free_space=True, cloud_period_s=0.2, use_sim_time=True,
                      keyframe_voxel_size_m=0.1,
                      **dict(TINY, tiny_weights_path='random')) as (node, ns), \
            client_node() as client:
        routes = Collector(client, Path, f'{ns}/vlm3r_node/route', LATCHED)
        _player, clock = replay(
            client, node, ns, bag, {TOPIC_IMAGE, TOPIC_POSE},
            {TOPIC_IMAGE: f'{ns}/camera/image_raw', TOPIC_POSE: f'{ns}/camera/pose'})
        res = call(client, PlanRoute, f'{ns}/vlm3r_node/plan_route',
                   PlanRoute.Request(goal='the door'), timeout=60)
        assert res.success, res.message
        assert follow_path_problems(res.path, 'map') == []  # z-up map from pose_topic
        assert len(res.path.poses) >= 2
        now = node.get_clock().now().nanoseconds
        assert abs(stamp_to_ns(res.path.header.stamp) - now) < 5e9  # sim time, not wall
        published = routes.wait(timeout=10)
        assert follow_path_problems(published, 'map') == []
        # With external z-up poses the grid is in the map's x-y plane.
        grid = Collector(client, OccupancyGrid, f'{ns}/vlm3r_node/free_space', LATCHED).wait()
        q = grid.info.origin.orientation
        assert (q.x, q.y, q.z, q.w) == pytest.approx((0, 0, 0, 1))
        assert grid.info.origin.position.z < 1.0  # the floor, below the camera
        clock.close()


def test_stale_frames_are_dropped_and_counted_on_wall_time():
    with running_node(model_profile='none', max_input_age_s=1.0) as (node, ns), \
            client_node() as client:
        statuses = Collector(client, SceneStatus, f'{ns}/vlm3r_node/status')
        diags = Collector(client, DiagnosticArray, '/diagnostics')
        publish_frames(client, f'{ns}/camera/image_raw', 5, start_ns=1_000_000_000)  # 1970
        status = statuses.wait(lambda m: m.frames_too_old >= 5)
        assert status.frames_too_old == 5 and status.frames_received == 0
        assert status.input_stamp_age_s > 1e9

        def clock_warn(msg):
            return any(s.name == f'{ns}/vlm3r_node: input clock' and s.level ==
                       DiagnosticStatus.WARN and 'wall time' in s.message for s in msg.status)

        diag = diags.wait(clock_warn)
        clock = next(s for s in diag.status if s.name.endswith('input clock'))
        assert 'behind the node clock' in clock.message and '5 frames dropped' in clock.message
        publish_frames(client, f'{ns}/camera/image_raw', 3, start_ns=time.time_ns())
        status = statuses.wait(lambda m: m.frames_received >= 3)
        assert status.frames_too_old == 5 and abs(status.input_stamp_age_s) < 1.0
        assert len(node.engine.buffer) == 3


def test_max_input_age_follows_sim_time():
    with running_node(model_profile='none', max_input_age_s=1.0, use_sim_time=True) as \
            (node, ns), client_node() as client:
        clock_pub = client.create_publisher(Clock, '/clock', 10)
        assert wait_for(lambda: clock_pub.get_subscription_count() > 0, 10)
        clock_pub.publish(Clock(clock=ns_to_stamp(100 * 1_000_000_000)))
        assert wait_for(lambda: node.get_clock().now().nanoseconds == 100 * 1_000_000_000, 10)
        topic = f'{ns}/camera/image_raw'
        publish_frames(client, topic, 3, start_ns=98_000_000_000)  # 1.8..2 s old: dropped
        publish_frames(client, topic, 3, start_ns=99_500_000_000)  # 0.3..0.5 s old: kept
        gate = node._input_clock.gate
        assert wait_for(lambda: gate.too_old + len(node.engine.buffer) >= 6, 10)
        # The status timer runs on sim time: advance /clock so it reports.
        statuses = Collector(client, SceneStatus, f'{ns}/vlm3r_node/status')
        clock_pub.publish(Clock(clock=ns_to_stamp(100_500_000_000)))
        status = statuses.wait(lambda m: stamp_to_ns(m.header.stamp) == 100_500_000_000)
        assert (status.frames_too_old, status.frames_received) == (3, 3)
        assert status.input_stamp_age_s == pytest.approx(0.3, abs=1e-6)
        diag = Collector(client, DiagnosticArray, '/diagnostics')
        clock_pub.publish(Clock(clock=ns_to_stamp(101_000_000_000)))
        found = diag.wait(lambda m: any(s.name == f'{ns}/vlm3r_node: input clock'
                                        for s in m.status))
        status = next(s for s in found.status if s.name.endswith('input clock'))
        assert status.hardware_id == 'sim time' and '3 frames dropped' in status.message
