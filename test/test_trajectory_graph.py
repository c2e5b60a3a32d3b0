"""Tests for the traversed-trajectory graph and A* planning on synthetic trajectories."""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlm3r_ros.planning.trajectory_graph import (
    EDGE_REVISIT, EDGE_TRAVERSED, GroundPlane, TrajectoryGraph, Unreachable, UnreachableReason,
    wrap_angle)


def zup_pose(x: float, y: float, yaw: float, z: float = 1.2) -> np.ndarray:
    """Return an OpenCV-camera (x right, y down, z forward) pose in a z-up world."""
    pose = np.eye(4)
    pose[:3, 0] = [math.sin(yaw), -math.cos(yaw), 0.0]
    pose[:3, 1] = [0.0, 0.0, -1.0]
    pose[:3, 2] = [math.cos(yaw), math.sin(yaw), 0.0]
    pose[:3, 3] = [x, y, z]
    return pose


def polyline(corners: list[tuple[float, float]], step: float) -> list[tuple[float, float, float]]:
    """Return (x, y, yaw) samples every ``step`` along a polyline, yaw = travel direction."""
    out = []
    for (x0, y0), (x1, y1) in zip(corners[:-1], corners[1:]):
        n = int(round(math.hypot(x1 - x0, y1 - y0) / step))
        yaw = math.atan2(y1 - y0, x1 - x0)
        out += [(x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n, yaw) for i in range(n)]
    out.append((corners[-1][0], corners[-1][1], out[-1][2]))
    return out


def walk(graph: TrajectoryGraph, samples: list[tuple[float, float, float]],
         first_frame: int = 0) -> list[int]:
    """Feed samples as frames first_frame, first_frame+1, ... (stamp = frame * 1e8 ns)."""
    return [graph.add_pose(first_frame + i, (first_frame + i) * 100_000_000, zup_pose(x, y, yaw))
            for i, (x, y, yaw) in enumerate(samples)]


def P(x: float, y: float) -> np.ndarray:
    """Return a world position at camera height."""
    return np.array([x, y, 1.2])


def test_straight_corridor_subsamples_and_plans_exact_length() -> None:
    g = TrajectoryGraph(node_spacing_m=0.25, link_radius_m=0.6)
    walk(g, polyline([(0.0, 0.0), (5.0, 0.0)], 0.05))
    assert 20 <= len(g) <= 21
    assert all(kind == EDGE_TRAVERSED for _, _, kind in g.edges())
    res = g.plan(P(0.0, 0.0), goal_position=P(5.0, 0.0))
    assert res.length_m == pytest.approx(5.0, abs=1e-9)
    assert np.allclose(res.plane_xy[:, 1], 0.0)
    assert np.all(np.diff(res.plane_xy[:, 0]) > 0.0)
    assert np.allclose(res.headings_rad, 0.0)
    back = g.plan(P(5.0, 0.0), goal_position=P(0.0, 0.0))
    assert back.length_m == pytest.approx(5.0, abs=1e-9)
    assert np.allclose(np.abs(back.headings_rad), math.pi)


def test_l_shape_path_turns_and_goal_frame_heading() -> None:
    g = TrajectoryGraph(node_spacing_m=0.5, link_radius_m=0.6)
    frames = walk(g, polyline([(0.0, 0.0), (3.0, 0.0), (3.0, 2.0)], 0.5))
    assert len(g) == len(frames) == 11
    # Corner neighbours are 0.71 m apart: beyond the link radius, so no corner cutting.
    assert not [e for e in g.edges() if e[2] == EDGE_REVISIT]
    res = g.plan(P(0.0, 0.0), goal_frame_id=10)
    assert res.length_m == pytest.approx(5.0)
    assert res.node_ids == tuple(range(11))
    assert np.allclose(res.plane_xy[-1], [3.0, 2.0])
    assert np.allclose(res.headings_rad[:6], 0.0)
    assert np.allclose(res.headings_rad[6:], math.pi / 2)
    # Goal given as a frame: the last pose faces the way that keyframe's camera faced.
    g2 = TrajectoryGraph(node_spacing_m=0.5, link_radius_m=0.6)
    walk(g2, polyline([(0.0, 0.0), (3.0, 0.0)], 0.5))
    g2.add_pose(99, 99, zup_pose(3.0, 0.0, -2.0))  # turn in place: new node (heading change)
    res2 = g2.plan(P(0.0, 0.0), goal_frame_id=99)
    assert res2.headings_rad[-1] == pytest.approx(-2.0)
    assert res2.length_m == pytest.approx(3.0)


def square_loop(link_radius: float) -> TrajectoryGraph:
    """Return a graph of a 4 m square loop walked anticlockwise, stopping 0.5 m short."""
    g = TrajectoryGraph(node_spacing_m=0.5, link_radius_m=link_radius)
    walk(g, polyline([(0, 0), (4, 0), (4, 4), (0, 4), (0, 0.5)], 0.5))
    return g


def test_loop_revisit_edge_gives_exact_shortcut() -> None:
    g = square_loop(0.6)
    revisits = [(a, b) for a, b, kind in g.edges() if kind == EDGE_REVISIT]
    assert len(revisits) == 1
    a, b = revisits[0]
    assert {tuple(g.node(a).plane_xy), tuple(g.node(b).plane_xy)} == {(0.0, 0.0), (0.0, 0.5)}
    # From the end (0, 0.5) to (2, 0): 0.5 down the closing edge, then 2 along the start.
    res = g.plan(P(0.0, 0.5), goal_position=P(2.0, 0.0))
    assert res.length_m == pytest.approx(2.5)
    no_link = square_loop(0.0).plan(P(0.0, 0.5), goal_position=P(2.0, 0.0))
    assert no_link.length_m == pytest.approx(3.5 + 4.0 + 4.0 + 2.0)


def test_figure_eight_uses_the_crossing() -> None:
    corners = [(0, 0), (2, 0), (2, 2), (0, 2), (0, 0), (-2, 0), (-2, -2), (0, -2), (0, 0)]
    g = TrajectoryGraph(node_spacing_m=0.5, link_radius_m=0.6)
    walk(g, polyline(corners, 0.5))
    # (2, 1) on the first lobe to (-2, -1) on the second: 3 m to the crossing, 3 m after.
    res = g.plan(P(2.0, 1.0), goal_position=P(-2.0, -1.0))
    assert res.length_m == pytest.approx(6.0)
    assert np.min(np.linalg.norm(res.plane_xy, axis=1)) == pytest.approx(0.0)
    replay = TrajectoryGraph(node_spacing_m=0.5, link_radius_m=0.0)
    walk(replay, polyline(corners, 0.5))
    assert replay.plan(P(2.0, 1.0), goal_position=P(-2.0, -1.0)).length_m == pytest.approx(8.0)


def test_disconnected_trajectories_are_unreachable() -> None:
    g = TrajectoryGraph(node_spacing_m=0.25, link_radius_m=0.0)
    walk(g, polyline([(0, 0), (2, 0)], 0.25))
    g.break_chain()
    walk(g, polyline([(0, 0.5), (2, 0.5)], 0.25), first_frame=100)
    with pytest.raises(Unreachable) as err:
        g.plan(P(0.0, 0.0), goal_frame_id=108)
    assert err.value.reason is UnreachableReason.DISCONNECTED
    # The same two passes with loop closures enabled are joined side by side.
    linked = TrajectoryGraph(node_spacing_m=0.25, link_radius_m=0.6)
    walk(linked, polyline([(0, 0), (2, 0)], 0.25))
    linked.break_chain()
    walk(linked, polyline([(0, 0.5), (2, 0.5)], 0.25), first_frame=100)
    # Best rung is the 0.56 m diagonal (0, 0)-(0.25, 0.5), then 1.75 m along the second pass.
    expected = math.hypot(0.25, 0.5) + 1.75
    assert linked.plan(P(0.0, 0.0), goal_frame_id=108).length_m == pytest.approx(expected)


def test_large_jump_starts_a_new_chain() -> None:
    g = TrajectoryGraph(node_spacing_m=0.25, link_radius_m=0.6, max_jump_m=2.0)
    walk(g, polyline([(0, 0), (1, 0)], 0.25))
    walk(g, polyline([(10, 0), (11, 0)], 0.25), first_frame=50)
    with pytest.raises(Unreachable) as err:
        g.plan(P(0.0, 0.0), goal_frame_id=54)
    assert err.value.reason is UnreachableReason.DISCONNECTED


def test_planning_errors_have_reasons() -> None:
    g = TrajectoryGraph()
    with pytest.raises(Unreachable) as err:
        g.plan(P(0, 0), goal_frame_id=0)
    assert err.value.reason is UnreachableReason.EMPTY_GRAPH
    walk(g, polyline([(0, 0), (2, 0)], 0.25))
    cases = [({'goal_frame_id': 1234}, P(0, 0), UnreachableReason.UNKNOWN_FRAME),
             ({'goal_position': P(1, 0)}, P(0, 5), UnreachableReason.START_OFF_GRAPH),
             ({'goal_position': P(1, 5)}, P(0, 0), UnreachableReason.GOAL_OFF_GRAPH)]
    for goal, start, reason in cases:
        with pytest.raises(Unreachable) as err:
            g.plan(start, **goal)
        assert err.value.reason is reason
    with pytest.raises(Unreachable) as err:
        g.shortest_path(0, 999)
    assert err.value.reason is UnreachableReason.UNKNOWN_NODE
    with pytest.raises(ValueError):
        g.plan(P(0, 0))
    with pytest.raises(ValueError):
        g.add_pose(0, 0, np.full((4, 4), np.nan))


def test_plan_keeps_off_node_start_and_goal_positions() -> None:
    g = TrajectoryGraph(node_spacing_m=0.5, link_radius_m=0.0)
    walk(g, polyline([(0, 0), (2, 0)], 0.5))
    res = g.plan(P(0.1, 0.2), goal_position=P(1.9, -0.1))
    assert np.allclose(res.plane_xy[0], [0.1, 0.2])
    assert np.allclose(res.plane_xy[-1], [1.9, -0.1])
    seg = np.linalg.norm(np.diff(res.plane_xy, axis=0), axis=1)
    assert res.length_m == pytest.approx(seg.sum())
    assert len(res.node_ids) == len(res.plane_xy) - 2
    same = g.plan(P(1.0, 0.0), goal_position=P(1.0, 0.0))
    assert same.length_m == 0.0 and len(same.plane_xy) == 1


def test_bounded_by_max_nodes_and_remove_before() -> None:
    g = TrajectoryGraph(node_spacing_m=0.5, link_radius_m=0.6, max_nodes=10, max_frames=15)
    walk(g, polyline([(0, 0), (20, 0)], 1.0))  # 21 frames, each a node
    assert len(g) == 10
    assert g.node_ids == list(range(11, 21))
    assert g.node_for_frame(0) is None and g.node_for_frame(20) == 20
    with pytest.raises(Unreachable) as err:
        g.plan(P(20, 0), goal_frame_id=3)
    assert err.value.reason is UnreachableReason.UNKNOWN_FRAME
    assert g.plan(P(20, 0), goal_frame_id=11).length_m == pytest.approx(9.0)
    # Frames index: a stationary camera adds frames to one node without growing the graph.
    for f in range(100, 140):
        g.add_pose(f, f * 100_000_000, zup_pose(20.0, 0.0, 0.0))
    assert len(g) == 10 and g.node_for_frame(139) == 20 and g.node_for_frame(100) is None
    removed = g.remove_before(16 * 100_000_000)
    assert removed == 5 and g.node_ids == list(range(16, 21))
    assert all(a in g.node_ids and b in g.node_ids for a, b, _ in g.edges())
    # The latest node was seen last at stamp 139e8, so it survives; then drop everything.
    assert g.remove_before(10**12) == 5 and len(g) == 0
    g.add_pose(200, 200, zup_pose(0.0, 0.0, 0.0))
    assert len(g) == 1 and g.edges() == []


def test_heading_change_creates_nodes_in_place() -> None:
    g = TrajectoryGraph(node_spacing_m=0.25, link_radius_m=0.6, heading_change_deg=45.0)
    for i, deg in enumerate(range(0, 101, 10)):  # turn in place by 10 degree steps
        g.add_pose(i, i, zup_pose(0.0, 0.0, math.radians(deg)))
    assert [round(math.degrees(g.node(n).yaw_rad)) for n in g.node_ids] == [0, 50, 100]
    assert g.node_for_frame(9) == g.node_ids[1]
    assert [kind for *_, kind in g.edges()] == [EDGE_TRAVERSED, EDGE_TRAVERSED]


def test_cut3r_up_axis_projects_onto_first_camera_ground_plane() -> None:
    # CUT3R world = first camera frame (x right, y down, z forward): up is -y.
    g = TrajectoryGraph(node_spacing_m=0.5, link_radius_m=0.0, up_axis=(0.0, -1.0, 0.0))
    frame = 0
    for z in np.arange(0.0, 2.01, 0.5):  # walk forward, bobbing up and down
        pose = np.eye(4)
        pose[:3, 3] = [0.0, 0.05 * math.sin(4 * z), z]
        g.add_pose(frame, frame, pose)
        frame += 1
    turn_right = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    for x in np.arange(0.5, 1.51, 0.5):  # yaw 90 deg to the right, walk along +x
        pose = np.eye(4)
        pose[:3, :3] = turn_right
        pose[:3, 3] = [x, 0.0, 2.0]
        g.add_pose(frame, frame, pose)
        frame += 1
    first, last = g.node(g.node_ids[0]), g.node(g.node_ids[-1])
    assert first.yaw_rad == pytest.approx(math.pi / 2)  # forward is 'up the page'
    assert wrap_angle(last.yaw_rad - first.yaw_rad) == pytest.approx(-math.pi / 2)  # right
    res = g.plan(np.zeros(3), goal_frame_id=frame - 1)
    assert res.length_m == pytest.approx(3.5)  # height bobbing does not count
    assert np.allclose(res.plane_xy[-1], [1.5, 2.0])


def test_ground_plane_basis_and_quaternion() -> None:
    zup = GroundPlane()
    q = zup.heading_quaternion(math.pi / 2)
    assert np.allclose(q, [0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4)])
    cut3r = GroundPlane((0.0, -1.0, 0.0))
    assert np.allclose(cut3r.e1, [1, 0, 0]) and np.allclose(cut3r.e2, [0, 0, 1])
    for yaw in (-2.5, 0.0, 1.0, 3.0):
        rot = cut3r.heading_rotation(yaw)
        assert np.allclose(rot.T @ rot, np.eye(3)) and np.linalg.det(rot) == pytest.approx(1.0)
        x, y, z, w = cut3r.heading_quaternion(yaw)
        # Rebuild the rotation from the quaternion and compare.
        rq = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                       [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                       [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        assert np.allclose(rq, rot)
        assert np.allclose(cut3r.to_plane(rot[:, 0]), [math.cos(yaw), math.sin(yaw)])
    pts = np.array([[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]])
    assert np.allclose(cut3r.from_plane(cut3r.to_plane(pts), cut3r.height(pts)), pts)
    with pytest.raises(ValueError):
        GroundPlane((0.0, 0.0, 0.0))
    with pytest.raises(ValueError):
        GroundPlane((0.0, 0.0, 1.0), plane_x_axis=(0.0, 0.0, 2.0))


def dijkstra(graph: TrajectoryGraph, start: int, goal: int) -> float:
    """Independent oracle: plain Dijkstra over edges() with plane-distance weights."""
    adj: dict[int, list[tuple[int, float]]] = {n: [] for n in graph.node_ids}
    for a, b, _ in graph.edges():
        w = float(np.linalg.norm(graph.node(a).plane_xy - graph.node(b).plane_xy))
        adj[a].append((b, w))
        adj[b].append((a, w))
    dist = {start: 0.0}
    heap = [(0.0, start)]
    while heap:
        d, n = heapq.heappop(heap)
        if n == goal:
            return d
        if d > dist[n]:
            continue
        for m, w in adj[n]:
            if d + w < dist.get(m, math.inf):
                dist[m] = d + w
                heapq.heappush(heap, (d + w, m))
    return math.inf


@settings(max_examples=60, deadline=None)
@given(points=st.lists(st.tuples(st.floats(0.0, 3.0), st.floats(0.0, 3.0)), min_size=2,
                       max_size=30),
       link=st.sampled_from([0.0, 0.5, 1.0]), pair=st.tuples(st.integers(0, 10**6),
                                                              st.integers(0, 10**6)))
def test_astar_matches_dijkstra_and_path_is_consistent(points: list[tuple[float, float]],
                                                       link: float,
                                                       pair: tuple[int, int]) -> None:
    # Jumpy 'trajectories' in a small box: long consecutive chords plus many revisit edges
    # give graphs with plenty of cycles, where a wrong A* would find a longer path.
    g = TrajectoryGraph(node_spacing_m=0.2, link_radius_m=link, revisit_min_travel_m=0.5,
                        max_jump_m=None)
    for i, (x, y) in enumerate(points):
        g.add_pose(i, i, zup_pose(x, y, 0.3 * i))
    ids = g.node_ids
    start, goal = ids[pair[0] % len(ids)], ids[pair[1] % len(ids)]
    res = g.shortest_path(start, goal)
    assert res.length_m == pytest.approx(dijkstra(g, start, goal), abs=1e-9)
    seg = np.linalg.norm(np.diff(res.plane_xy, axis=0), axis=1)
    assert res.length_m == pytest.approx(float(seg.sum()), abs=1e-9)
    straight = float(np.linalg.norm(g.node(goal).plane_xy - g.node(start).plane_xy))
    assert res.length_m >= straight - 1e-9
    assert res.node_ids[0] == start and res.node_ids[-1] == goal
    for a, b in zip(res.node_ids[:-1], res.node_ids[1:]):
        assert b in g.neighbours(a)


def test_export_import_rebuilds_the_same_graph_and_keeps_building() -> None:
    graph = square_loop(0.6)
    walk(graph, [(0.5, 0.5, 0.0)], first_frame=1000)  # after the loop: a revisit
    state = graph.export_state()
    copy = TrajectoryGraph(node_spacing_m=0.5, link_radius_m=0.6)
    copy.import_state(state)
    assert copy.edges() == graph.edges() and copy.node_ids == graph.node_ids
    for a, b in ((0, len(graph) - 1), (3, 9)):
        pa, pb = graph.shortest_path(a, b), copy.shortest_path(a, b)
        assert pa.node_ids == pb.node_ids and pa.length_m == pb.length_m
    # The latest node and heading carried over: the next pose extends the same chain.
    pose = zup_pose(1.2, 0.5, 0.0)
    assert graph.add_pose(2000, 2000, pose) == copy.add_pose(2000, 2000, pose)
    assert copy.edges() == graph.edges()
    copy.renumber_frames(10)
    assert copy.node_for_frame(2010) == graph.node_for_frame(2000)
    broken = dict(state, edges=np.array([[0, 999, 0]]))
    with pytest.raises(ValueError, match='unknown nodes'):
        copy.import_state(broken)
    assert copy.node_for_frame(2010) is not None  # a refused import leaves the graph as it was
