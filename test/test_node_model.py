"""The node with the tiny model on a real ROS graph: answers, keyframes, routes, failures."""
import heapq
import math
import threading

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped

from ros_support import (ActionClient, Collector, call, client_node, publish_frames,
                         running_node, wait_for)
from vlm3r_ros.action import PlanRoute as PlanRouteAction
from vlm3r_ros.msg import SceneStatus
from vlm3r_ros.node.ros_convert import matrix_to_pose, ns_to_stamp, stamp_to_ns
from vlm3r_ros.pipeline.answers import parse_answer
from vlm3r_ros.srv import PlanRoute, SpatialQuery
from vlm3r_ros.tools import route_map_cli

pytestmark = pytest.mark.ros
TINY = dict(model_profile='tiny', geometry_rate_hz=100.0)
START_NS, PERIOD_NS = 1_000_000_000, 100_000_000


def wait_ready(client, ns, frames):
    statuses = Collector(client, SceneStatus, f'{ns}/vlm3r_node/status')
    return statuses.wait(lambda m: m.model_state == SceneStatus.MODEL_READY
                         and m.keyframe_count > 0 and m.frames_received >= frames, timeout=60)


def test_questions_answered_from_selected_keyframes():
    with running_node(**TINY) as (node, ns), client_node() as client:
        publish_frames(client, f'{ns}/camera/image_raw', 10, pause_s=0.1)
        status = wait_ready(client, ns, 10)
        assert 0 < status.keyframe_coverage <= 1.0 and status.voxels_observed > 0
        options = ['the sofa', 'the tv', 'the lamp']
        req = SpatialQuery.Request(question='Which object is closest to the door?',
                                   options=options)
        res = call(client, SpatialQuery, f'{ns}/vlm3r_node/spatial_query', req)
        assert res.success and res.error_code == SpatialQuery.Response.OK, res.message
        published = {START_NS + i * PERIOD_NS for i in range(10)}
        stamps = [stamp_to_ns(s) for s in res.keyframe_stamps]
        assert stamps and set(stamps) <= published and stamps == sorted(stamps)
        assert 0 < res.coverage <= 1.0
        parsed = parse_answer(res.answer, options)  # fields follow the VSI-Bench parsing
        assert res.option_index == parsed.option_index
        again = call(client, SpatialQuery, f'{ns}/vlm3r_node/spatial_query', req)
        assert again.answer == res.answer  # greedy decoding over the cached prefix
        num = call(client, SpatialQuery, f'{ns}/vlm3r_node/spatial_query',
                   SpatialQuery.Request(question='How many chairs?', keyframe_budget=3))
        assert num.success and len(num.keyframe_stamps) <= 3
        value = parse_answer(num.answer).value
        assert (math.isnan(num.value) and math.isnan(value)) or num.value == value


def test_time_window_without_frames_is_no_frames():
    with running_node(**TINY) as (_node, ns), client_node() as client:
        publish_frames(client, f'{ns}/camera/image_raw', 4)
        wait_ready(client, ns, 4)
        req = SpatialQuery.Request(question='How many chairs?',
                                   window_start=ns_to_stamp(50_000_000_000),
                                   window_end=ns_to_stamp(60_000_000_000))
        res = call(client, SpatialQuery, f'{ns}/vlm3r_node/spatial_query', req)
        assert res.error_code == SpatialQuery.Response.NO_FRAMES
        assert 'time window' in res.message


def l_shaped_poses(n_per_leg=10, step=0.3):
    """Camera poses (OpenCV camera, world z up) walking +x then +y, 1.2 m high."""
    poses = []
    forward_x = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float).T  # cam z -> world x
    turn = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], float)  # +90 deg about z
    for i in range(2 * n_per_leg):
        pose = np.eye(4)
        if i < n_per_leg:
            pose[:3, :3], pose[:3, 3] = forward_x, [i * step, 0, 1.2]
        else:
            pose[:3, :3] = turn @ forward_x
            pose[:3, 3] = [(n_per_leg - 1) * step, (i - n_per_leg + 1) * step, 1.2]
        poses.append(pose)
    return poses


def dijkstra_length(graph, start, goal):
    ids, xy = graph.node_positions()
    pos = {int(i): p for i, p in zip(ids, xy)}
    dist, heap = {start: 0.0}, [(0.0, start)]
    while heap:
        d, u = heapq.heappop(heap)
        if u == goal:
            return d
        if d > dist.get(u, math.inf):
            continue
        for v in graph.neighbours(u):
            nd = d + float(np.linalg.norm(pos[u] - pos[v]))
            if nd < dist.get(v, math.inf):
                dist[v] = nd
                heapq.heappush(heap, (nd, v))
    return math.inf


def test_route_over_traversed_graph_service_and_action(tmp_path):
    poses = l_shaped_poses()
    with running_node(pose_topic='pose', pose_topic_type='pose_stamped', **TINY) as (node, ns), \
            client_node() as client:
        pose_pub = client.create_publisher(PoseStamped, f'{ns}/pose', 50)
        assert wait_for(lambda: pose_pub.get_subscription_count() > 0, 5)
        for i, pose in enumerate(poses):
            msg = PoseStamped(pose=matrix_to_pose(pose))
            msg.header.stamp = ns_to_stamp(START_NS + i * PERIOD_NS)
            msg.header.frame_id = 'map'
            pose_pub.publish(msg)
        assert wait_for(lambda: len(node.engine.poses) == len(poses), 5)
        publish_frames(client, f'{ns}/camera/image_raw', len(poses), pause_s=0.1)
        wait_ready(client, ns, len(poses))
        res = call(client, PlanRoute, f'{ns}/vlm3r_node/plan_route',
                   PlanRoute.Request(goal='the fridge'), timeout=60)
        assert res.success, res.message
        assert res.path.header.frame_id == 'map' and len(res.path.poses) >= 1
        goal_ns = stamp_to_ns(res.goal_stamp)
        goal_pose = poses[(goal_ns - START_NS) // PERIOD_NS]
        end = res.path.poses[-1].pose.position
        np.testing.assert_allclose([end.x, end.y], goal_pose[:2, 3], atol=1e-6)
        start = res.path.poses[0].pose.position
        latest = node.engine.buffer.latest()
        np.testing.assert_allclose([start.x, start.y], latest.pose[:2, 3], atol=1e-6)
        graph = node.engine.graph
        expected = dijkstra_length(graph, graph.nearest_node(latest.pose[:3, 3]),
                                   graph.nearest_node(goal_pose[:3, 3]))
        assert res.length_m == pytest.approx(expected, abs=graph.node_spacing_m + 1e-6)
        assert res.steps[-1] == 'You have reached the final destination.'
        # The action gives the same plan with feedback.
        action = ActionClient(client, PlanRouteAction, f'{ns}/vlm3r_node/plan_route_action')
        assert action.wait_for_server(timeout_sec=10)
        stages, done = [], threading.Event()
        goal_future = action.send_goal_async(PlanRouteAction.Goal(goal='the fridge'),
                                             feedback_callback=lambda f: stages.append(
                                                 f.feedback.stage))
        assert wait_for(goal_future.done, 10)
        result_future = goal_future.result().get_result_async()
        result_future.add_done_callback(lambda _f: done.set())
        assert done.wait(60)
        result = result_future.result().result
        assert result.success and result.steps == res.steps
        assert 'queued' in stages and 'planning' in stages
        # The top-down map of what the node published (trajectory, keyframes, route).
        out = tmp_path / 'map.png'
        assert route_map_cli.main(['--node', f'{ns}/vlm3r_node', '--out', str(out)]) == 0
        assert out.stat().st_size > 10_000


def test_model_load_failure_is_reported_and_node_keeps_serving():
    with running_node(model_profile='tiny', cut3r_weights='/nonexistent/cut3r.pth') as \
            (_node, ns), client_node() as client:
        statuses = Collector(client, SceneStatus, f'{ns}/vlm3r_node/status')
        statuses.wait(lambda m: m.model_state == SceneStatus.MODEL_ERROR, timeout=30)
        diags = Collector(client, DiagnosticArray, '/diagnostics')
        msg = diags.wait(lambda m: any(s.level == DiagnosticStatus.ERROR and ns in s.name
                                       for s in m.status))
        error = next(s for s in msg.status if s.level == DiagnosticStatus.ERROR)
        assert 'does not exist' in error.message
        publish_frames(client, f'{ns}/camera/image_raw', 3)
        statuses.wait(lambda m: m.frames_received == 3 and m.buffer_length == 3)
        res = call(client, SpatialQuery, f'{ns}/vlm3r_node/spatial_query',
                   SpatialQuery.Request(question='How many chairs?'))
        assert res.error_code == SpatialQuery.Response.MODEL_NOT_READY
        assert 'failed to load' in res.message and 'cut3r_weights' in res.message
