"""Messages for a navigation stack: odometry, point cloud, occupancy grid, input clock.

Pure conversions (message types only, no node): :mod:`vlm3r_ros.node.nav_outputs` publishes
what they return.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from nav_msgs.msg import OccupancyGrid, Odometry
from sensor_msgs.msg import PointCloud2, PointField
from transforms3d.quaternions import mat2quat

from vlm3r_ros.node.ros_convert import matrix_to_pose, ns_to_stamp
from vlm3r_ros.pipeline.input_age import ClockReport
from vlm3r_ros.pipeline.reconstruction import GeometryEvent, Reconstruction
from vlm3r_ros.planning.occupancy import Grid

# x, y, z float32 then rgb packed into a float32 (0x00RRGGBB), as RViz and PCL expect.
CLOUD_FIELDS = [PointField(name='x', offset=0, datatype=PointField.FLOAT32, count=1),
                PointField(name='y', offset=4, datatype=PointField.FLOAT32, count=1),
                PointField(name='z', offset=8, datatype=PointField.FLOAT32, count=1),
                PointField(name='rgb', offset=12, datatype=PointField.FLOAT32, count=1)]
POINT_STEP = 16


def pose_covariance(confidence: float, position_sigma_m: float,
                    rotation_sigma_rad: float) -> np.ndarray:
    """Return the 6x6 pose covariance (x, y, z, rot x, rot y, rot z) for a frame.

    The sigmas are those of a frame with confidence 1 (the least CUT3R reports); the
    variances shrink as 1 / confidence (the pointmap's mean confidence, >= 1), so a
    well-constrained frame is trusted more. An unknown confidence (NaN) counts as 1.
    """
    c = confidence if math.isfinite(confidence) and confidence > 1.0 else 1.0
    var = np.array([position_sigma_m ** 2] * 3 + [rotation_sigma_rad ** 2] * 3) / c
    return np.diag(var)


def odometry_msg(event: GeometryEvent, previous: GeometryEvent | None, frame_id: str,
                 child_frame_id: str, position_sigma_m: float,
                 rotation_sigma_rad: float) -> Odometry:
    """Return the camera's odometry for one processed frame, stamped with its time.

    Pose: ``child_frame_id`` (the camera optical frame) in ``frame_id`` (map_frame).
    Twist, in the child frame: the finite difference to the ``previous`` frame's pose
    (zero, with the pose's variance, for the first frame or a stamp that did not advance).
    """
    msg = Odometry()
    msg.header.stamp = ns_to_stamp(event.stamp_ns)
    msg.header.frame_id = frame_id
    msg.child_frame_id = child_frame_id
    msg.pose.pose = matrix_to_pose(event.pose)
    cov = pose_covariance(event.confidence, position_sigma_m, rotation_sigma_rad)
    msg.pose.covariance = [float(v) for v in cov.reshape(-1)]
    dt = (event.stamp_ns - previous.stamp_ns) / 1e9 if previous is not None else 0.0
    twist_cov = cov
    if previous is not None and dt > 0:
        rot = event.pose[:3, :3]
        linear = rot.T @ (event.pose[:3, 3] - previous.pose[:3, 3]) / dt
        delta = previous.pose[:3, :3].T @ rot
        w, x, y, z = mat2quat(delta)
        angle = 2.0 * math.atan2(math.sqrt(x * x + y * y + z * z), w)
        norm = math.sqrt(x * x + y * y + z * z)
        axis = np.array([x, y, z]) / norm if norm > 1e-12 else np.zeros(3)
        angular = axis * wrap(angle) / dt
        msg.twist.twist.linear.x, msg.twist.twist.linear.y, msg.twist.twist.linear.z = (
            float(v) for v in linear)
        msg.twist.twist.angular.x, msg.twist.twist.angular.y, msg.twist.twist.angular.z = (
            float(v) for v in angular)
        twist_cov = cov * 2.0 / (dt * dt)  # difference of two poses over dt
    msg.twist.covariance = [float(v) for v in twist_cov.reshape(-1)]
    return msg


def wrap(angle: float) -> float:
    """Return ``angle`` wrapped to (-pi, pi]."""
    wrapped = math.remainder(angle, 2.0 * math.pi)
    return math.pi if wrapped == -math.pi else wrapped


def cloud_msg(cloud: Reconstruction, frame_id: str) -> PointCloud2:
    """Return the reconstruction as an unordered xyz + rgb PointCloud2 (stamp: its newest
    frame)."""
    n = int(cloud.xyz.shape[0])
    buf = np.zeros((n, 4), dtype=np.float32)
    buf[:, :3] = cloud.xyz
    rgb = cloud.rgb.astype(np.uint32)
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    buf[:, 3] = packed.view(np.float32)
    msg = PointCloud2()
    msg.header.stamp = ns_to_stamp(cloud.stamp_ns)
    msg.header.frame_id = frame_id
    msg.height, msg.width = 1, n
    msg.fields = list(CLOUD_FIELDS)
    msg.is_bigendian = False
    msg.point_step = POINT_STEP
    msg.row_step = POINT_STEP * n
    msg.is_dense = True
    msg.data = buf.tobytes()
    return msg


def cloud_arrays(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray]:
    """Return (xyz (N, 3) float32, rgb (N, 3) uint8) of a cloud made by :func:`cloud_msg`."""
    buf = np.frombuffer(bytes(msg.data), dtype=np.float32).reshape(-1, 4)
    packed = buf[:, 3].copy().view(np.uint32)
    rgb = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=1)
    return buf[:, :3].copy(), rgb.astype(np.uint8)


def grid_msg(grid: Grid, frame_id: str, stamp: Time) -> OccupancyGrid:
    """Return the grid as a ``nav_msgs/OccupancyGrid`` (row-major from the origin cell)."""
    msg = OccupancyGrid()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.info.map_load_time = stamp
    msg.info.resolution = float(grid.resolution_m)
    msg.info.width, msg.info.height = grid.width, grid.height
    p = msg.info.origin.position
    p.x, p.y, p.z = grid.origin
    q = msg.info.origin.orientation
    q.x, q.y, q.z, q.w = grid.orientation_xyzw
    msg.data = grid.data.reshape(-1).astype(np.int8).tolist()
    return msg


def clock_status(report: ClockReport, node_name: str) -> DiagnosticStatus:
    """Return the 'input clock' diagnostic: WARN when frame stamps and the node clock
    disagree by more than stamp_skew_warn_s, or frames were dropped as too old."""
    status = DiagnosticStatus(name=f'{node_name}: input clock', hardware_id=report.clock)
    status.level = DiagnosticStatus.WARN if report.warn else DiagnosticStatus.OK
    status.message = report.message
    age = '' if report.age_s is None else f'{report.age_s:.3f}'
    status.values = [KeyValue(key='clock', value=report.clock),
                     KeyValue(key='input_stamp_age_s', value=age),
                     KeyValue(key='frames_too_old', value=str(report.too_old)),
                     KeyValue(key='max_input_age_s', value=f'{report.max_age_s:g}')]
    return status


def follow_path_problems(path: Any, frame_id: str, yaw_tolerance_rad: float = 1e-3,
                         planar: bool = True) -> list[str]:
    """Return what keeps ``path`` (``nav_msgs/Path``) from Nav2 FollowPath conventions.

    Checked: the path and every pose are in ``frame_id``; every pose carries the path's
    stamp; positions and orientations are finite, quaternions unit length; each pose
    except the last faces the next pose (yaw along the path, within the tolerance); with
    ``planar`` (a z-up frame, as Nav2's 2-D controllers assume) no roll or pitch. Empty
    when none.
    """
    problems: list[str] = []
    if path.header.frame_id != frame_id:
        problems.append(f'path frame {path.header.frame_id!r} is not {frame_id!r}')
    poses = list(path.poses)
    if not poses:
        problems.append('path has no poses')
    xy = []
    for i, ps in enumerate(poses):
        if ps.header.frame_id != frame_id:
            problems.append(f'pose {i} frame {ps.header.frame_id!r} is not {frame_id!r}')
        if (ps.header.stamp.sec, ps.header.stamp.nanosec) != (path.header.stamp.sec,
                                                             path.header.stamp.nanosec):
            problems.append(f'pose {i} stamp differs from the path stamp')
        p, q = ps.pose.position, ps.pose.orientation
        quat = np.array([q.w, q.x, q.y, q.z])
        if not np.all(np.isfinite([p.x, p.y, p.z])) or not np.all(np.isfinite(quat)):
            problems.append(f'pose {i} is not finite')
            continue
        if abs(float(np.linalg.norm(quat)) - 1.0) > 1e-6:
            problems.append(f'pose {i} quaternion is not unit length')
        if planar and (abs(q.x) > 1e-6 or abs(q.y) > 1e-6):
            problems.append(f'pose {i} has roll/pitch (not a rotation about z)')
        xy.append((p.x, p.y, 2.0 * math.atan2(q.z, q.w)))
    for i in range(len(xy) - 1):
        (x0, y0, yaw), (x1, y1, _) = xy[i], xy[i + 1]
        if math.hypot(x1 - x0, y1 - y0) < 1e-6:
            continue
        error = abs(wrap(math.atan2(y1 - y0, x1 - x0) - yaw))
        if error > yaw_tolerance_rad:
            problems.append(f'pose {i} faces {math.degrees(error):.1f} deg off the next pose')
    return problems
