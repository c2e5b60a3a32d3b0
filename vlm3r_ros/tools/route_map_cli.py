"""vlm3r-map: draw a top-down PNG of the trajectory, keyframes, goal and planned path.

    vlm3r-map --node /vlm3r_node --out map.png          # what a running node published
    vlm3r-map --bag out/demo --goal-frame 0 --out map.png  # plan over a bag's poses

From a node: reads its latched ``~/trajectory``, ``~/keyframes`` and ``~/route`` topics.
From a bag (a ``write_bag`` directory or a rosbag2 with a PoseStamped topic): builds the
traversed graph from the poses, plans from the last pose to ``--goal-frame`` and draws the
scene's objects when ``qa.json`` describes them.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from vlm3r_ros.planning.route_map import draw_route_map
from vlm3r_ros.planning.trajectory_graph import GroundPlane, TrajectoryGraph, Unreachable


def _parse_axis(text: str) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in text.split(','))
    return (x, y, z)


def map_from_bag(bag_dir: Path, goal_frame: int, out: Path, pose_topic: str) -> str:
    """Plan over the bag's poses and draw; return a one-line summary."""
    from vlm3r_ros.eval.bags import read_bag_frames
    bag = bag_dir / 'bag' if (bag_dir / 'bag').is_dir() else bag_dir
    poses = [(stamp, pose) for _, stamp, pose in read_bag_frames(bag, [pose_topic])]
    if not poses:
        raise ValueError(f'no {pose_topic} messages in {bag}')
    graph = TrajectoryGraph()
    for i, (stamp, pose) in enumerate(poses):
        graph.add_pose(i, stamp, pose)
    goal_frame = goal_frame % len(poses)
    path = graph.plan(poses[-1][1][:3, 3], goal_frame_id=goal_frame)
    to_xy = graph.plane.to_plane
    objects = None
    qa = bag_dir / 'qa.json'
    if qa.exists():
        scene = json.loads(qa.read_text()).get('scene', {})
        objects = [(o['category'], to_xy(np.asarray(o['center'], float)))
                   for o in scene.get('objects', [])]
    trajectory = to_xy(np.array([p[:3, 3] for _, p in poses]))
    draw_route_map(trajectory, None, trajectory[goal_frame], path.plane_xy, out,
                   objects=objects, graph=graph, start_xy=trajectory[-1],
                   title=f'{bag.name}: route to frame {goal_frame} ({path.length_m:.2f} m)')
    return f'wrote {out}: {len(poses)} poses, path {path.length_m:.2f} m'


def _latest(node: Any, msg_type: Any, topic: str, store: dict, key: str) -> Any:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    qos = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     reliability=ReliabilityPolicy.RELIABLE)
    return node.create_subscription(msg_type, topic, lambda m: store.__setitem__(key, m), qos)


def map_from_node(node_name: str, out: Path, up: tuple[float, float, float],
                  timeout: float) -> str:
    """Collect the node's latched outputs and draw; return a one-line summary."""
    import rclpy
    from nav_msgs.msg import Path as PathMsg
    from visualization_msgs.msg import Marker, MarkerArray
    context = rclpy.Context()  # its own context: callable from a process already using ROS
    rclpy.init(args=[], context=context)  # argv is argparse's
    node = rclpy.create_node('vlm3r_map', context=context)
    store: dict[str, Any] = {}
    base = node_name.rstrip('/')
    subs = [_latest(node, PathMsg, f'{base}/trajectory', store, 'trajectory'),
            _latest(node, MarkerArray, f'{base}/keyframes', store, 'keyframes'),
            _latest(node, PathMsg, f'{base}/route', store, 'route')]
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        end = time.monotonic() + timeout
        while time.monotonic() < end and len(store) < 3:
            time.sleep(0.05)
    finally:
        executor.shutdown(timeout_sec=1.0)
        del subs
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    if 'trajectory' not in store:
        raise TimeoutError(f'nothing on {base}/trajectory within {timeout:g} s '
                           '(is the node running and active?)')
    plane = GroundPlane(up)

    def xy(poses: list) -> np.ndarray:
        pts = np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z]
                        for p in poses]).reshape(-1, 3)
        return plane.to_plane(pts)

    trajectory = xy(store['trajectory'].poses)
    keyframes = None
    if 'keyframes' in store:
        pts = np.array([[m.pose.position.x, m.pose.position.y, m.pose.position.z]
                        for m in store['keyframes'].markers if m.action == Marker.ADD])
        keyframes = plane.to_plane(pts.reshape(-1, 3))
    path = xy(store['route'].poses) if 'route' in store else None
    goal = path[-1] if path is not None and len(path) else None
    draw_route_map(trajectory, keyframes, goal, path, out,
                   start_xy=path[0] if path is not None and len(path) else None,
                   title=f'{base}: trajectory, keyframes and last route')
    return (f'wrote {out}: {len(trajectory)} trajectory nodes, '
            f'{0 if keyframes is None else len(keyframes)} keyframes, '
            f'{"no route yet" if path is None else f"route of {len(path)} poses"}')


def main(argv: list[str] | None = None) -> int:
    """Draw the map; return 0 on success, 1 on an error (printed)."""
    parser = argparse.ArgumentParser(prog='vlm3r-map', description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--node', help='running node, e.g. /vlm3r_node')
    source.add_argument('--bag', type=Path, help='write_bag directory or rosbag2 directory')
    parser.add_argument('--out', type=Path, default=Path('route_map.png'))
    parser.add_argument('--goal-frame', type=int, default=0, help='bag mode: goal frame index')
    parser.add_argument('--pose-topic', default='/camera/pose', help='bag mode: pose topic')
    parser.add_argument('--up-axis', default='0,0,1',
                        help="node mode: world up axis 'x,y,z' (0,-1,0 for CUT3R's world)")
    parser.add_argument('--timeout', type=float, default=10.0)
    args = parser.parse_args(argv)
    try:
        if args.bag is not None:
            print(map_from_bag(args.bag, args.goal_frame, args.out, args.pose_topic))
        else:
            print(map_from_node(args.node, args.out, _parse_axis(args.up_axis), args.timeout))
    except (ValueError, TimeoutError, Unreachable, FileNotFoundError) as exc:
        print(f'error: {exc}')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
