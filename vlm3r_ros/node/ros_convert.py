"""Conversions between ROS messages and the pipeline's plain types."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Pose, PoseStamped
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from transforms3d.quaternions import mat2quat
from visualization_msgs.msg import Marker, MarkerArray

from vlm3r_ros.ingest.image_codec import (
    Intrinsics, decode_color, decode_compressed, decode_depth, intrinsics_from_k)
from vlm3r_ros.pipeline.engine import EngineStatus
from vlm3r_ros.pipeline.input_checks import MAX_POSITION_M, pose_matrix
from vlm3r_ros.pipeline.input_monitor import InputReport
from vlm3r_ros.pipeline.requests import QueryRequest, RouteResult, validate_query

NS = 1_000_000_000


def stamp_to_ns(stamp: Time) -> int:
    """Return a ``builtin_interfaces/Time`` as integer nanoseconds."""
    return int(stamp.sec) * NS + int(stamp.nanosec)


def query_from_msg(msg: Any, max_question_chars: int) -> QueryRequest:
    """Return the validated question of a SpatialQuery request or action goal.

    Raises RequestError (with its error code) for a question the node refuses.
    """
    return validate_query(
        msg.question, list(msg.options), msg.answer_type,
        (stamp_to_ns(msg.window_start), stamp_to_ns(msg.window_end)),
        int(msg.keyframe_budget), max_question_chars=max_question_chars)


def ns_to_stamp(ns: int) -> Time:
    """Return integer nanoseconds as a ``builtin_interfaces/Time``."""
    return Time(sec=int(ns // NS), nanosec=int(ns % NS))


def image_to_rgb(msg: Image | CompressedImage) -> np.ndarray:
    """Return an HxWx3 uint8 RGB array; raises ImageDecodeError on bad data."""
    if isinstance(msg, CompressedImage):
        return decode_compressed(msg.format, bytes(msg.data))
    return decode_color(msg.encoding, msg.height, msg.width, msg.step, bytes(msg.data),
                        is_bigendian=bool(msg.is_bigendian))


def depth_to_array(msg: Image, depth_scale: float = 0.001) -> np.ndarray:
    """Return HxW float32 metres (NaN = no data); raises ImageDecodeError on bad data."""
    return decode_depth(msg.encoding, msg.height, msg.width, msg.step, bytes(msg.data),
                        is_bigendian=bool(msg.is_bigendian), depth_scale=depth_scale)


def camera_info_to_intrinsics(msg: CameraInfo) -> Intrinsics:
    """Return validated intrinsics; raises ImageDecodeError for zero/NaN values."""
    return intrinsics_from_k(list(msg.k), msg.width, msg.height)


def rgb_to_image(rgb: np.ndarray, stamp_ns: int, frame_id: str = 'camera') -> Image:
    """Return a ``sensor_msgs/Image`` (rgb8) for an HxWx3 uint8 array."""
    msg = Image()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = 'rgb8'
    msg.step = msg.width * 3
    msg.data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    return msg


def pose_to_matrix(pose: Pose, max_position_m: float = MAX_POSITION_M) -> np.ndarray:
    """Return a 4x4 matrix for a ``geometry_msgs/Pose``.

    Raises ValueError for a non-finite pose, a position beyond ``max_position_m``, or a
    quaternion off unit norm (a zero one included, which quat2mat would silently turn
    into the identity); see :func:`vlm3r_ros.pipeline.input_checks.pose_matrix`.
    """
    p, q = pose.position, pose.orientation
    return pose_matrix((p.x, p.y, p.z), (q.w, q.x, q.y, q.z), max_position_m)


def transform_to_matrix(msg: Any, max_position_m: float = MAX_POSITION_M) -> np.ndarray:
    """Return a 4x4 matrix for a ``geometry_msgs/Transform`` (or TransformStamped).

    Raises ValueError as :func:`pose_to_matrix` does.
    """
    t = getattr(msg, 'transform', msg)
    q, v = t.rotation, t.translation
    return pose_matrix((v.x, v.y, v.z), (q.w, q.x, q.y, q.z), max_position_m)


def pose_msg_to_matrix(msg: PoseStamped | Odometry,
                       max_position_m: float = MAX_POSITION_M) -> tuple[int, np.ndarray]:
    """Return (stamp_ns, 4x4 camera-to-world) from an odometry or pose message.

    Raises ValueError for an invalid pose (see :func:`pose_to_matrix`).
    """
    pose = msg.pose.pose if isinstance(msg, Odometry) else msg.pose
    return stamp_to_ns(msg.header.stamp), pose_to_matrix(pose, max_position_m)


def matrix_to_pose(matrix: np.ndarray) -> Pose:
    """Return a ``geometry_msgs/Pose`` for a 4x4 matrix."""
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in matrix[:3, 3])
    w, x, y, z = mat2quat(matrix[:3, :3])
    pose.orientation.w, pose.orientation.x = float(w), float(x)
    pose.orientation.y, pose.orientation.z = float(y), float(z)
    return pose


def route_to_path(result: RouteResult, frame_id: str, stamp: Time) -> Path:
    """Return the route's poses as a ``nav_msgs/Path`` (orientation = travel heading)."""
    path = Path()
    path.header.frame_id = frame_id
    path.header.stamp = stamp
    for position, quat in zip(result.positions, result.orientations):
        ps = PoseStamped()
        ps.header = path.header
        ps.pose.position.x, ps.pose.position.y, ps.pose.position.z = position
        x, y, z, w = quat
        ps.pose.orientation.x, ps.pose.orientation.y = x, y
        ps.pose.orientation.z, ps.pose.orientation.w = z, w
        path.poses.append(ps)
    return path


def points_to_path(points: np.ndarray, frame_id: str, stamp: Time) -> Path:
    """Return (N, 3) points as a ``nav_msgs/Path`` with identity orientations."""
    path = Path()
    path.header.frame_id, path.header.stamp = frame_id, stamp
    for x, y, z in np.asarray(points, dtype=np.float64).reshape(-1, 3):
        ps = PoseStamped()
        ps.header = path.header
        ps.pose.position.x, ps.pose.position.y, ps.pose.position.z = float(x), float(y), float(z)
        ps.pose.orientation.w = 1.0
        path.poses.append(ps)
    return path


def keyframe_markers(poses: Sequence[tuple[int, np.ndarray]], frame_id: str, stamp: Time,
                     namespace: str = 'keyframes') -> MarkerArray:
    """Return one arrow per keyframe pose (camera viewing direction) plus a DELETEALL."""
    array = MarkerArray()
    clear = Marker()
    clear.action = Marker.DELETEALL
    array.markers.append(clear)
    for i, (_, matrix) in enumerate(poses):
        marker = Marker()
        marker.header.frame_id, marker.header.stamp = frame_id, stamp
        marker.ns, marker.id = namespace, i
        marker.type, marker.action = Marker.ARROW, Marker.ADD
        # Arrow along the optical (+z) axis: rotate the marker's +x onto the camera's +z.
        view = matrix.copy()
        view[:3, :3] = matrix[:3, :3] @ np.array([[0, 0, -1], [0, 1, 0], [1, 0, 0]], float)
        marker.pose = matrix_to_pose(view)
        marker.scale.x, marker.scale.y, marker.scale.z = 0.3, 0.05, 0.05
        marker.color.r, marker.color.g, marker.color.b, marker.color.a = 0.1, 0.6, 1.0, 0.9
        array.markers.append(marker)
    return array


def _kv(key: str, value: object) -> KeyValue:
    return KeyValue(key=key, value=str(value))


def diagnostics(status: EngineStatus, stream_state: str, input_desc: str, node_name: str,
                stamp: Time, seconds_since_frame: float | None,
                inputs: InputReport | None = None) -> DiagnosticArray:
    """Return the node's diagnostics: the input stream and the model, each with a level.

    Input: OK while frames arrive, WARN when none arrived for a while (naming the topic and
    QoS), and WARN with the problems of ``inputs`` (zero stamps naming the topic, frames
    lost before the node with QoS advice, calibration or depth of another size). Model:
    OK when ready, WARN while loading or not configured, ERROR with the reason when
    loading failed.
    """
    array = DiagnosticArray()
    array.header.stamp = stamp
    stream = DiagnosticStatus(name=f'{node_name}: camera input', hardware_id=input_desc)
    if stream_state == 'OK':
        stream.level, stream.message = DiagnosticStatus.OK, 'frames arriving'
    else:
        stream.level = DiagnosticStatus.WARN
        waited = '' if seconds_since_frame is None else f' for {seconds_since_frame:.1f} s'
        verb = 'no frame received yet' if stream_state == 'WAITING' else 'no new frame'
        stream.message = (f'{verb}{waited} on {input_desc}; check the topic name and that the '
                          'publisher QoS is compatible (reliability/durability)')
    stream.values = [_kv('frames_received', status.frames_received),
                     _kv('frames_dropped', status.frames_dropped),
                     _kv('frames_evicted', status.frames_evicted),
                     _kv('buffer_length', status.buffer_length),
                     _kv('buffer_span_s', f'{status.buffer_span_s:.2f}'),
                     _kv('buffer_resets', status.buffer_resets)]
    if inputs is not None:
        if inputs.warnings:
            stream.level = DiagnosticStatus.WARN
            head = '' if stream_state == 'OK' else stream.message + '; '
            stream.message = head + '; '.join(inputs.warnings)
        loss = inputs.loss
        stream.values += [_kv(k, v) for k, v in inputs.counters.as_dict().items()]
        stream.values += [_kv('frames_lost_estimated', loss.lost),
                          _kv('recent_loss_ratio', f'{loss.recent_ratio:.3f}'),
                          _kv('stream_period_s', f'{loss.period_s or 0.0:.4f}')]
    model = DiagnosticStatus(name=f'{node_name}: model', hardware_id=status.model_profile)
    state = status.model_state.name
    if state == 'READY':
        model.level, model.message = DiagnosticStatus.OK, 'model ready'
    elif state == 'ERROR':
        model.level, model.message = DiagnosticStatus.ERROR, \
            f'model failed to load: {status.model_error}'
    else:
        model.level = DiagnosticStatus.WARN
        model.message = {'LOADING': 'model loading', 'UNLOADED': 'model not loaded (inactive)',
                         'NOT_CONFIGURED': status.model_error or 'no model configured'}[state]
    model.values = [_kv('state', state), _kv('geometry_frames', status.geometry_frames),
                    _kv('keyframes', status.keyframe_count),
                    _kv('coverage', f'{status.keyframe_coverage:.3f}'),
                    _kv('queued_requests', status.queued_requests),
                    _kv('pose_source', status.pose_source),
                    _kv('tracking_lost_frames', status.tracking_lost),
                    _kv('last_error', status.last_error)]
    array.status = [stream, model]
    return array


def finite_or_nan(value: float) -> float:
    """Return ``value`` if finite, else NaN (ROS float64 carries NaN fine)."""
    return value if math.isfinite(value) else math.nan
