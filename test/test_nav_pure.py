"""Pure pieces of the navigation outputs and input hygiene (no ROS graph)."""
import math

import numpy as np
import pytest

from vlm3r_ros.node.nav_convert import (CLOUD_FIELDS, POINT_STEP, clock_status, cloud_arrays,
                                        cloud_msg, follow_path_problems, grid_msg,
                                        odometry_msg, pose_covariance)
from vlm3r_ros.node.ros_convert import ns_to_stamp, route_to_path
from vlm3r_ros.pipeline.errors import ErrorCode
from vlm3r_ros.pipeline.input_age import StampAgeGate
from vlm3r_ros.pipeline.reconstruction import (GeometryEvent, VoxelCloud, colored_voxels,
                                                mean_confidence)
from vlm3r_ros.pipeline.requests import RouteResult
from vlm3r_ros.pipeline.voxels import voxel_keys, voxel_keys_per_point
from vlm3r_ros.planning.occupancy import FREE, OCCUPIED, UNKNOWN, GridSettings, build_grid
from vlm3r_ros.planning.trajectory_graph import GroundPlane, TrajectoryGraph

NS = 1_000_000_000


# ------------------------------------------------------------------ reconstruction
def test_per_point_keys_match_voxel_keys():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(40, 30, 3)).astype(np.float32) * 3
    pts[0, 0] = np.nan
    pts[0, 1] = [1e9, 0, 0]
    per_point = voxel_keys_per_point(pts, 0.1)
    assert per_point.shape == (1200,) and per_point[0] == -1 and per_point[1] == -1
    np.testing.assert_array_equal(np.unique(per_point[per_point >= 0]), voxel_keys(pts, 0.1))


def test_colored_voxels_average_colours_and_resize_the_image():
    pts = np.zeros((2, 2, 3), np.float32)
    pts[0, 0] = pts[0, 1] = [0.05, 0.05, 0.05]  # one voxel, two pixels
    pts[1, 0] = [1.05, 0.05, 0.05]
    pts[1, 1] = np.nan
    image = np.array([[[0, 0, 0], [200, 100, 50]], [[10, 20, 30], [255, 255, 255]]], np.uint8)
    keys, rgb = colored_voxels(pts, image, 0.1)
    np.testing.assert_array_equal(keys, voxel_keys(pts, 0.1))
    assert rgb.tolist() == [[100, 50, 25], [10, 20, 30]]
    big = np.repeat(np.repeat(image, 4, axis=0), 4, axis=1)  # 8x8: resized to the pointmap
    assert colored_voxels(pts, big, 0.1)[1].tolist() == rgb.tolist()
    keep = np.array([[True, False], [True, True]])
    assert colored_voxels(pts, image, 0.1, keep)[1].tolist() == [[0, 0, 0], [10, 20, 30]]


def test_voxel_cloud_union_hits_bound_and_eviction():
    cloud = VoxelCloud(0.5)
    a = voxel_keys(np.array([[0.1, 0.1, 0.1], [1.1, 0.1, 0.1]]), 0.5)
    b = voxel_keys(np.array([[0.1, 0.1, 0.1], [2.1, 0.1, 0.1]]), 0.5)
    cloud.add(1, 5 * NS, a, np.array([[0, 0, 0], [10, 10, 10]], np.uint8))
    cloud.add(2, 6 * NS, b, np.array([[100, 100, 100], [20, 20, 20]], np.uint8))
    snap = cloud.snapshot()
    assert snap.total == 3 and snap.stamp_ns == 6 * NS and snap.xyz.dtype == np.float32
    np.testing.assert_allclose(snap.xyz[:, 0], [0.25, 1.25, 2.25])  # voxel centres
    assert snap.hits.tolist() == [2, 1, 1] and snap.rgb[0].tolist() == [50, 50, 50]
    assert cloud.snapshot() is snap  # cached until it changes
    bounded = cloud.snapshot(max_points=1)
    assert bounded.xyz.shape == (1, 3) and bounded.hits.tolist() == [2] and bounded.total == 3
    version = cloud.version
    cloud.remove(2)
    assert cloud.version != version and cloud.snapshot().total == 2
    cloud.clear()
    assert cloud.snapshot().total == 0 and cloud.snapshot().stamp_ns == 0
    assert math.isnan(mean_confidence(None)) and mean_confidence(np.array([1.0, 3.0])) == 2.0


# ------------------------------------------------------------------ occupancy grid
def room_cloud():
    """A 4 x 4 m floor at z=0 (0.1 m voxels), a box obstacle at x in 2.5..3, and noise."""
    xs = np.arange(0.05, 4.0, 0.1)
    floor = np.array([[x, y, 0.05] for x in xs for y in xs])
    box = np.array([[x, y, z] for x in (2.55, 2.65, 2.75, 2.85, 2.95)
                    for y in (1.05, 1.15) for z in (0.35, 0.45)])
    noise = np.array([[0.55, 3.55, 0.55]])
    xyz = np.concatenate([floor, box, noise])
    hits = np.concatenate([np.full(len(floor), 3), np.full(len(box), 3), [1]])
    return xyz, hits


def test_grid_free_traversed_obstacles_and_unknown():
    xyz, hits = room_cloud()
    nodes = np.array([[0.5, 0.5, 1.2], [1.5, 0.5, 1.2], [1.5, 2.5, 1.2]])
    edges = np.array([[0, 1], [1, 2]])
    plane = GroundPlane((0, 0, 1))
    settings = GridSettings(resolution_m=0.1, robot_radius_m=0.2, min_hits=2)
    grid = build_grid(xyz, hits, nodes, edges, plane, settings)
    assert grid is not None and grid.floor_height_m == pytest.approx(0.05)
    assert grid.orientation_xyzw == pytest.approx((0, 0, 0, 1))  # z up: identity
    assert grid.data.shape == (grid.height, grid.width) and grid.data.dtype == np.int8

    def cell(x, y):
        i = int((x - grid.origin_xy[0]) // 0.1)
        j = int((y - grid.origin_xy[1]) // 0.1)
        return grid.data[j, i]

    assert cell(1.0, 0.5) == FREE and cell(1.5, 1.5) == FREE  # along the traversed edges
    assert cell(2.75, 1.1) == OCCUPIED  # the box
    assert cell(0.55, 3.55) == FREE  # one-frame noise above the floor is not an obstacle
    assert cell(3.5, 3.5) == FREE  # observed floor
    assert set(np.unique(grid.data)) <= {FREE, OCCUPIED, UNKNOWN}
    # Traversed beats reconstructed: a trajectory through the box clears its cells.
    through = build_grid(xyz, hits, np.array([[2.0, 1.1, 1.2], [3.5, 1.1, 1.2]]),
                         np.array([[0, 1]]), plane, settings)
    i = int((2.75 - through.origin_xy[0]) // 0.1)
    j = int((1.1 - through.origin_xy[1]) // 0.1)
    assert through.data[j, i] == FREE
    # Bounded in cells; unknown where nothing was seen.
    small = build_grid(xyz, hits, nodes, edges, plane, GridSettings(max_cells=10))
    assert small.width <= 11 and small.height <= 11
    empty = build_grid(np.zeros((0, 3)), np.zeros(0), nodes, edges, plane, settings)
    assert empty is not None and (empty.data == UNKNOWN).any() and (empty.data == FREE).any()
    assert build_grid(np.zeros((0, 3)), np.zeros(0), np.zeros((0, 3)), np.zeros((0, 2)),
                      plane, settings) is None
    msg = grid_msg(grid, 'map', ns_to_stamp(7 * NS))
    assert (msg.info.width, msg.info.height) == (grid.width, grid.height)
    assert len(msg.data) == grid.width * grid.height and msg.header.frame_id == 'map'
    assert msg.info.resolution == pytest.approx(0.1) and msg.header.stamp.sec == 7


def test_grid_in_a_y_down_world_rotates_into_the_plane():
    xyz, hits = room_cloud()
    flip = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], float)  # z-up -> CUT3R's y-down
    plane = GroundPlane((0, -1, 0))
    nodes = np.array([[0.5, 0.5, 1.2], [1.5, 0.5, 1.2]])
    grid = build_grid(xyz @ flip.T, hits, nodes @ flip.T, np.array([[0, 1]]), plane,
                      GridSettings())
    ref = build_grid(xyz, hits, nodes, np.array([[0, 1]]), GroundPlane((0, 0, 1)),
                     GridSettings())
    np.testing.assert_array_equal(grid.data, ref.data)  # same cells, in the plane's axes
    from transforms3d.quaternions import quat2mat
    x, y, z, w = grid.orientation_xyzw
    rot = quat2mat([w, x, y, z])
    np.testing.assert_allclose(rot[:, 2], plane.up, atol=1e-9)  # grid z = world up


# ------------------------------------------------------------------ messages
def test_cloud_message_layout_round_trips():
    cloud = VoxelCloud(0.1)
    cloud.add(0, 3 * NS, voxel_keys(np.array([[0.05, 0.05, 0.05], [1.0, 2.0, 3.0]]), 0.1),
              np.array([[255, 0, 10], [1, 2, 3]], np.uint8))
    snap = cloud.snapshot()
    msg = cloud_msg(snap, 'map')
    assert msg.header.frame_id == 'map' and msg.header.stamp.sec == 3
    assert (msg.height, msg.width, msg.point_step) == (1, 2, POINT_STEP)
    assert [f.name for f in msg.fields] == ['x', 'y', 'z', 'rgb'] == [f.name for f in
                                                                      CLOUD_FIELDS]
    assert len(msg.data) == msg.row_step == 2 * POINT_STEP
    xyz, rgb = cloud_arrays(msg)
    np.testing.assert_allclose(xyz, snap.xyz)
    assert rgb.tolist() == snap.rgb.tolist()


def test_odometry_pose_covariance_and_twist():
    pose0, pose1 = np.eye(4), np.eye(4)
    pose1[:3, 3] = [0.0, 0.0, 0.5]  # 0.5 m along the camera's optical axis
    c, s = math.cos(0.1), math.sin(0.1)
    pose1[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]  # 0.1 rad about camera y
    e0 = GeometryEvent(10 * NS, pose0, 1.0, False)
    e1 = GeometryEvent(10 * NS + NS // 2, pose1, 4.0, False)
    first = odometry_msg(e0, None, 'map', 'camera', 0.05, 0.02)
    assert first.header.frame_id == 'map' and first.child_frame_id == 'camera'
    assert (first.header.stamp.sec, first.header.stamp.nanosec) == (10, 0)
    cov0 = np.array(first.pose.covariance).reshape(6, 6)
    assert cov0[0, 0] == pytest.approx(0.05 ** 2) and cov0[5, 5] == pytest.approx(0.02 ** 2)
    msg = odometry_msg(e1, e0, 'map', 'camera', 0.05, 0.02)
    cov1 = np.array(msg.pose.covariance).reshape(6, 6)
    assert cov1[0, 0] == pytest.approx(0.05 ** 2 / 4)  # 4x the confidence: 1/4 the variance
    assert msg.pose.pose.position.z == pytest.approx(0.5)
    assert msg.twist.twist.angular.y == pytest.approx(0.2, rel=1e-6)  # 0.1 rad in 0.5 s
    speed = math.hypot(msg.twist.twist.linear.x, msg.twist.twist.linear.z)
    assert speed == pytest.approx(1.0)
    np.testing.assert_allclose(pose_covariance(math.nan, 1.0, 1.0), np.eye(6))


def test_follow_path_conventions_of_a_planned_route():
    graph = TrajectoryGraph(node_spacing_m=0.25, link_radius_m=0.0)
    forward_x = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float).T  # camera z -> world x
    turn = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], float)
    for i in range(16):
        pose = np.eye(4)
        if i < 8:
            pose[:3, :3], pose[:3, 3] = forward_x, [i * 0.3, 0, 1.2]
        else:
            pose[:3, :3], pose[:3, 3] = turn @ forward_x, [2.1, (i - 7) * 0.3, 1.2]
        graph.add_pose(i, i * NS, pose)
    path = graph.plan([0.0, 0.0, 1.2], goal_frame_id=15)
    result = RouteResult(ErrorCode.OK, positions=[tuple(p) for p in path.positions],
                         orientations=[tuple(graph.plane.heading_quaternion(h))
                                       for h in path.headings_rad])
    msg = route_to_path(result, 'map', ns_to_stamp(42 * NS))
    assert len(msg.poses) >= 3
    assert follow_path_problems(msg, 'map') == []
    assert follow_path_problems(msg, 'odom')[0].startswith("path frame 'map'")
    msg.poses[0].pose.orientation.z, msg.poses[0].pose.orientation.w = 1.0, 0.0
    assert any('faces' in p for p in follow_path_problems(msg, 'map'))


# ------------------------------------------------------------------ input hygiene
def test_stamp_age_gate_drops_old_frames_and_reports_skew():
    gate = StampAgeGate(max_age_s=1.0, skew_warn_s=5.0)
    assert gate.admit(10 * NS, 0)  # no clock yet (sim time before /clock): kept
    assert gate.age_s is None and not gate.report(True).warn
    assert gate.admit(99 * NS, 100 * NS) and gate.age_s == pytest.approx(1.0)
    assert not gate.admit(98 * NS, 100 * NS) and gate.too_old == 1
    assert gate.admit(106 * NS, 100 * NS)  # from the future: kept, but far off
    report = gate.report(sim_time=True)
    assert report.warn and 'ahead of the node clock (sim time)' in report.message
    assert '1 frames dropped' in report.message
    wall = StampAgeGate(skew_warn_s=5.0)
    assert wall.admit(1 * NS, 1_800_000_000 * NS)  # max_age_s 0: nothing dropped
    text = wall.report(sim_time=False).message
    assert 'behind the node clock (wall time)' in text and '--clock' in text
    status = clock_status(wall.report(False), '/n')
    assert status.level == status.WARN and status.name == '/n: input clock'
    ok = StampAgeGate(skew_warn_s=5.0)
    ok.admit(100 * NS, 100 * NS + 1000)
    assert clock_status(ok.report(False), '/n').level == status.OK
