"""A geometry stream whose poses are tracked from the images (``rgb_pose_source`` tracking).

:class:`TrackedStream` wraps the node's CUT3R stream and replaces each frame's pose by the
one :class:`~vlm3r_ros.pipeline.rgb_odometry.RgbOdometry` tracks and its world pointmap by
the frame's own-view points placed with that pose; tokens, confidences and own-view points
are the encoder's. It resets, exports and imports together with the wrapped stream. Pure
NumPy/OpenCV: no ROS, no torch (the stream is duck-typed).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from vlm3r_ros.pipeline.rgb_odometry import (OdometryConfig, RgbOdometry, focal_scale,
                                             intrinsics_from_pointmap)

#: Informative frame pairs (turns of a few pixels, enough tracks) collected before the
#: focal length of a camera without camera_info is calibrated.
CALIBRATION_PAIRS = 12


class TrackedStream:
    """A geometry stream whose poses come from :class:`RgbOdometry`.

    Each step runs the wrapped stream (tokens, confidences and own-view points are its
    own), estimates the camera motion from the image tracks and the encoder's depth, and
    returns the frame's geometry with ``pose`` replaced by the tracked pose and
    ``pts_world`` by ``pts_self`` placed with it. Intrinsics given to :meth:`step` (the
    camera_info) are used for tracking. Without them, RGB alone is enough: the principal
    point and a first focal length are fitted to the encoder's own-view pointmap (whose
    focal length barely follows the lens: the small CUT3R cannot see the field of view),
    and once :data:`CALIBRATION_PAIRS` informative frame pairs were tracked the focal
    length is calibrated on them (:func:`focal_scale`) and kept.
    """

    def __init__(self, inner: Any, config: OdometryConfig = OdometryConfig()) -> None:
        """Wrap ``inner`` (a Cut3rStream or OnnxCut3rStream)."""
        self.inner = inner
        self.odometry = RgbOdometry(config)
        self._k_model: Optional[np.ndarray] = None  # running mean of fitted intrinsics
        self._k_count = 0
        self._focal_scale: Optional[float] = None  # calibrated factor on the fitted focal
        self._pairs: list[tuple[np.ndarray, np.ndarray]] = []
        self._pairs_k: Optional[np.ndarray] = None

    def __getattr__(self, name: str) -> Any:
        # Everything else (frame_index, supports_ray_map, image_size, ...) is the stream's.
        return getattr(self.inner, name)

    @property
    def focal_scale(self) -> Optional[float]:
        """Return the calibrated factor on the pointmap-fitted focal length (None: not yet)."""
        return self._focal_scale

    def reset(self, mode: str = 'new_sequence') -> None:
        """Reset the wrapped stream (its modes); a new sequence, which restarts the
        stream's frame count, also restarts the odometry and the calibration."""
        self.inner.reset(mode)
        if self.inner.frame_index == 0:
            self.odometry.reset()
            self._k_model, self._k_count = None, 0
            self._focal_scale, self._pairs, self._pairs_k = None, [], None

    def export_state(self) -> dict[str, np.ndarray]:
        """Return the wrapped stream's state plus the odometry's (``odometry_*`` keys:
        its pose, previous frame and calibration), so a restored stream continues
        exactly."""
        out = dict(self.inner.export_state())
        out.update({f'odometry_{k}': v for k, v in self.odometry.export_state().items()})
        if self._k_model is not None:
            out['odometry_k_model'] = self._k_model.astype(np.float64)
            out['odometry_k_count'] = np.array([self._k_count], np.int64)
        if self._focal_scale is not None:
            out['odometry_focal_scale'] = np.array([self._focal_scale], np.float64)
        return out

    def import_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Continue from :meth:`export_state` output. A state without odometry keys (saved
        by an encoder-posed stream) restarts the odometry at the identity.

        Raises:
            ValueError: as the wrapped stream's ``import_state``, or for odometry arrays
                of the wrong shape or with non-finite values.
        """
        for key, shape in (('odometry_k_model', (3, 3)), ('odometry_k_count', (1,)),
                           ('odometry_focal_scale', (1,))):
            value = arrays.get(key)
            if value is not None and (np.shape(value) != shape or not np.isfinite(value).all()):
                raise ValueError(f'{key} must be a finite array of shape {shape}')
        odometry = {key[len('odometry_'):]: v for key, v in arrays.items()
                    if key.startswith('odometry_') and not key.startswith(('odometry_k_',
                                                                           'odometry_focal'))}
        inner = {key: v for key, v in arrays.items() if not key.startswith('odometry_')}
        self.inner.import_state(inner)
        if 'pose' in odometry:
            self.odometry.import_state(odometry)
        else:
            self.odometry.reset()
        k, scale = arrays.get('odometry_k_model'), arrays.get('odometry_focal_scale')
        self._k_model = None if k is None else np.asarray(k, dtype=np.float64).copy()
        self._k_count = 0 if k is None else max(1, int(np.asarray(
            arrays.get('odometry_k_count', [1]))[0]))
        self._focal_scale = None if scale is None else float(np.asarray(scale)[0])
        self._pairs, self._pairs_k = [], None

    def step(self, image: np.ndarray, intrinsics: Optional[np.ndarray] = None,
             cam_to_world: Optional[np.ndarray] = None, update: bool = True) -> Any:
        """Process one frame (arguments as the wrapped stream's ``step``).

        Returns:
            The encoder's ``FrameGeometry`` with the tracked ``pose`` and
            ``pts_world`` = ``pts_self`` placed with it.

        Raises:
            ValueError: as the wrapped stream's ``step``.
        """
        geo = self.inner.step(image, intrinsics, cam_to_world, update)
        if geo.transform is None:
            return geo  # cannot map pixels to the pointmap: keep the encoder's poses
        pts_self = np.asarray(geo.pts_self, dtype=np.float64)
        calibrating = intrinsics is None and self._focal_scale is None
        if intrinsics is not None:
            k_src = np.asarray(intrinsics, dtype=np.float64)
        else:
            if calibrating or self._k_model is None:
                self._fit_intrinsics(pts_self)
            k_src = self.self_calibrated_intrinsics(geo.transform)
            if k_src is None:
                return geo
        result = self.odometry.step(image, pts_self[..., 2], k_src, geo.transform)
        if calibrating:
            self._calibrate()
        pose = result.cam_to_world
        world = (pts_self @ pose[:3, :3].T + pose[:3, 3]).astype(np.float32)
        return dataclasses.replace(geo, pose=pose, pts_world=world)

    def self_calibrated_intrinsics(self, transform: Any) -> Optional[np.ndarray]:
        """Return the source-image intrinsics tracking uses without camera_info: fitted to
        the pointmaps, with the calibrated focal length once there is one (None before the
        first fit). ``transform`` maps source to model-input pixels."""
        if self._k_model is None:
            return None
        k = transform.source_intrinsics(self._k_model)
        if self._focal_scale is not None:
            k[0, 0] *= self._focal_scale
            k[1, 1] *= self._focal_scale
        return k

    def _fit_intrinsics(self, pts_self: np.ndarray) -> None:
        """Add one own-view pointmap's fitted intrinsics to their running mean."""
        fitted = intrinsics_from_pointmap(pts_self)
        if fitted is not None:
            n = self._k_count
            self._k_model = fitted if self._k_model is None else (
                self._k_model * n + fitted) / (n + 1)
            self._k_count = n + 1

    def _calibrate(self) -> None:
        """Collect the last tracked pair if informative; calibrate once enough are in."""
        tracks = self.odometry.last_tracks
        if tracks is None:
            return
        u0, u1, k = tracks
        if len(u0) < 30 or np.median(np.linalg.norm(u1 - u0, axis=1)) < 3.0:
            return  # too few tracks, or the image barely moved
        if self._pairs_k is None:
            self._pairs_k = k
        # Pixels of another tracking resolution would not fit the reference K.
        if k.shape == self._pairs_k.shape and np.allclose(k[:2, 2], self._pairs_k[:2, 2], atol=2):
            self._pairs.append((u0, u1))
        if len(self._pairs) >= CALIBRATION_PAIRS:
            # The factor found for the first pair's K, expressed on the current fit.
            self._focal_scale = (focal_scale(self._pairs, self._pairs_k)
                                 * self._pairs_k[0, 0] / k[0, 0])
            self._pairs, self._pairs_k = [], None
