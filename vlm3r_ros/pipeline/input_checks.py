"""Plausibility checks of inputs that parse fine but would corrupt the scene.

A message can be well formed and still wrong: a pose 1e300 m from the origin (every later
route is UNREACHABLE), a quaternion of norm 2 (quietly normalised into some rotation), a
depth map of another size than its colour frame, a camera_info with fx = 1e-30 or for
another resolution, a stamp left at zero by the driver (every frame then carries the
same stamp and all but the first are dropped as duplicates). The functions here say what
is wrong (ValueError or a reason string fit for a log line); the node rejects those
inputs, counts them (:class:`InputCounters`, published in SceneStatus) and logs them
rate-limited; a stream of zero stamps gets a WARN naming its topic.

Plain Python and NumPy, no ROS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from transforms3d.quaternions import quat2mat

NS = 1_000_000_000
# A quaternion whose squared norm is further than this from 1 is refused, as tf2 refuses
# such a transform (QUATERNION_NORMALIZATION_TOLERANCE); closer ones are normalised.
QUATERNION_TOLERANCE = 0.01
# Default bound of pose positions (m): far beyond any site the node maps in one map_frame.
# Geographic coordinates (UTM, ECEF) belong in a local map frame; raise the
# max_pose_position_m parameter where a map is really larger.
MAX_POSITION_M = 10_000.0
# Depth maps whose aspect ratio differs by more than this from the colour frame's are
# another camera's view (reported, never stretched).
ASPECT_TOLERANCE = 0.01


@dataclass
class InputCounters:
    """Inputs refused or altered by the checks, by kind (see msg/SceneStatus.msg)."""

    stamps_rejected: int = 0
    poses_rejected: int = 0
    camera_info_rejected: int = 0
    calibration_mismatched: int = 0
    depth_size_rejected: int = 0

    def as_dict(self) -> dict[str, int]:
        """Return the counters by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def stamp_problem(sec: int, nanosec: int) -> str | None:
    """Return why a ``builtin_interfaces/Time`` is unusable as a sensor stamp, else None.

    Zero (a driver that never stamps), negative seconds and a nanosecond field of 1e9 or
    more are refused. Small positive stamps are fine (simulation time starts near zero).
    """
    if sec < 0:
        return f'stamp is negative (sec={sec}, nanosec={nanosec})'
    if nanosec >= NS:
        return f'stamp nanosec={nanosec} is not below 1e9'
    if sec == 0 and nanosec == 0:
        return 'stamp is zero (the publisher does not stamp its messages)'
    return None


def pose_matrix(position: tuple[float, float, float], quat_wxyz: tuple[float, float, float,
                                                                        float],
                max_position_m: float = MAX_POSITION_M) -> np.ndarray:
    """Return the 4x4 camera-to-world matrix of a position and a (w, x, y, z) quaternion.

    Raises ValueError for a non-finite position or quaternion, a position farther than
    ``max_position_m`` from the origin on any axis, or a quaternion whose squared norm
    is off 1 by more than :data:`QUATERNION_TOLERANCE` (a zero quaternion included:
    quat2mat would silently turn it into the identity). Near-unit quaternions are
    normalised.
    """
    quat = np.array(quat_wxyz, dtype=np.float64)
    if not np.all(np.isfinite(quat)):
        raise ValueError('pose orientation is not a valid quaternion '
                         f'(w={quat[0]}, x={quat[1]}, y={quat[2]}, z={quat[3]})')
    norm2 = float(quat @ quat)
    if norm2 < 1e-12:
        raise ValueError('pose orientation is not a valid quaternion '
                         f'(w={quat[0]}, x={quat[1]}, y={quat[2]}, z={quat[3]})')
    if abs(norm2 - 1.0) > QUATERNION_TOLERANCE:
        raise ValueError(f'pose orientation quaternion has norm {math.sqrt(norm2):.4g}, not '
                         f'1 (w={quat[0]:.4g}, x={quat[1]:.4g}, y={quat[2]:.4g}, '
                         f'z={quat[3]:.4g}); publish a unit quaternion')
    xyz = np.array(position, dtype=np.float64)
    if not np.all(np.isfinite(xyz)):
        raise ValueError(f'pose position is not finite ({xyz[0]}, {xyz[1]}, {xyz[2]})')
    if float(np.max(np.abs(xyz))) > max_position_m:
        raise ValueError(f'pose position ({xyz[0]:.4g}, {xyz[1]:.4g}, {xyz[2]:.4g}) m is '
                         f'beyond max_pose_position_m={max_position_m:g} from the map origin')
    out = np.eye(4)
    out[:3, :3] = quat2mat(quat / math.sqrt(norm2))
    out[:3, 3] = xyz
    return out


def depth_size_problem(depth_hw: tuple[int, int], image_hw: tuple[int, int]) -> str | None:
    """Return why a depth map of ``depth_hw`` cannot go with a colour frame of
    ``image_hw`` ((height, width) each), or None when the sizes are equal.

    A depth map of another size is another camera's view (unregistered depth) or one
    registered at another resolution; the node cannot tell which, so it never resizes it
    silently: the frame is buffered without depth and the pair is reported.
    """
    (dh, dw), (ih, iw) = depth_hw, image_hw
    if (dh, dw) == (ih, iw):
        return None
    aspect = 'another aspect ratio' if abs(dw / max(dh, 1) - iw / max(ih, 1)) > \
        ASPECT_TOLERANCE * iw / max(ih, 1) else 'the same aspect ratio'
    return (f'depth map {dw}x{dh} does not match its colour frame {iw}x{ih} ({aspect}); '
            'publish depth registered to the colour camera at its resolution (e.g. an '
            'aligned_depth_to_color topic)')


def calibration_problem(info_wh: tuple[int, int], image_wh: tuple[int, int]) -> str | None:
    """Return why camera_info for ``info_wh`` cannot calibrate a frame of ``image_wh``
    ((width, height) each), or None when they match."""
    if tuple(info_wh) == tuple(image_wh):
        return None
    return (f'camera_info is for {info_wh[0]}x{info_wh[1]} but the colour frames are '
            f'{image_wh[0]}x{image_wh[1]}: frames are used without intrinsics; publish the '
            "camera_info of the image topic's own resolution")
