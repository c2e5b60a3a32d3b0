"""Camera poses from RGB alone: feature tracks for rotation, the encoder's depth for scale.

The small CUT3R's pose head does not track motion (held out, its frame-to-frame rotation
error is larger than that of a camera assumed not to move; see the geometry model card),
while its per-frame depth is usable. :class:`RgbOdometry` therefore estimates the motion
between consecutive frames geometrically:

1. corners of the previous frame are tracked into the current one (pyramidal Lucas-Kanade
   with a forward-backward check);
2. the rotation is the one that best aligns the tracks' bearing vectors (2-point RANSAC
   over Kabsch fits, refined on the inliers): exact for turning on the spot, where an
   essential matrix is degenerate;
3. with that rotation fixed, the translation is the linear least-squares solution that
   makes the previous frame's tracked points (back-projected with the encoder's depth)
   reproject onto their tracks (iteratively reweighted), so it is metric and close to 0
   when the camera only turns;
4. rotation and translation are then refined together on the same points
   (:func:`refine_motion`), which removes the bias a bearing-only rotation takes from
   the parallax of a walking camera.

Also the intrinsics helpers a camera without camera_info needs
(:func:`intrinsics_from_pointmap`, :func:`focal_scale`). :mod:`vlm3r_ros.pipeline.tracked_stream` puts this under the node's
geometry stream. Pure NumPy/OpenCV: no ROS, no torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import cv2
import numpy as np

from vlm3r_ros.models.cut3r.preprocess import ImageTransform  # NumPy only (no torch)


@dataclass(frozen=True)
class OdometryConfig:
    """Tracking and estimation settings (defaults chosen on the geometry val split)."""

    max_width_px: int = 320  # frames are tracked at most this wide (K scaled with them)
    max_corners: int = 500
    corner_quality: float = 0.005
    corner_min_distance_px: int = 5
    window_px: int = 21
    pyramid_levels: int = 4
    max_forward_backward_px: float = 1.0
    min_tracks: int = 8
    min_translation_tracks: int = 30  # fewer tracks: rotation only
    rotation_inlier_deg: float = 1.0
    ransac_iterations: int = 64
    # Tracks further off the bearing-only rotation are not used for the translation (3:
    # val ATE 1.05 m against 1.06 m at 10, alone; with the refinement below 0.80 / 0.84).
    max_residual_deg: float = 3.0
    # When the rotation alone explains the tracks to within this median residual, treat the
    # motion as a pure turn (no translation). Off: on the val split a 0.3 / 0.15 deg gate
    # shortened slow forward motion (ATE 1.14 / 1.06 m against 1.05 m without).
    turn_only_residual_deg: float = 0.0
    translation: bool = True  # False: rotation only (the camera turns in place)
    # Gauss-Newton iterations refining rotation and translation together on the tracks
    # with depth (:func:`refine_motion`; 0: the rotation stays the bearing-only fit, which
    # absorbs the parallax of walking). On the val split 4 iterations brought ATE from
    # 1.06 to 0.80 m and rotation RPE from 0.53 to 0.44 deg (on true depth 0.64 -> 0.34 m).
    refine_rotation_iterations: int = 4
    max_step_m: float = 1.0  # a larger frame-to-frame translation is a failure
    # Frames in a row that may keep the last rotation when tracking fails (a fast turn
    # goes on); after that the camera is taken as still (e.g. staring at a bare wall).
    max_coast_frames: int = 3
    seed: int = 0


@dataclass
class OdometryStep:
    """One frame's result.

    Attributes:
        cam_to_world: (4, 4) pose in the world of the first frame since the last reset.
        tracks: tracks that passed the forward-backward check (0 on a first frame).
        inliers: tracks consistent with the estimated rotation.
        tracked: False when the motion could not be estimated (first frame, too few
            tracks): the camera is then assumed to have kept its last rotation (for at
            most ``max_coast_frames`` frames in a row, then to be still) and not to have
            moved.
    """

    cam_to_world: np.ndarray
    tracks: int
    inliers: int
    tracked: bool


def kabsch_rotation(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Return the rotation R minimising ``sum |dst - R src|^2`` for (N, 3) vectors."""
    u, _, vt = np.linalg.svd(src.T @ dst)
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    return vt.T @ np.diag([1.0, 1.0, d]) @ u.T


def ransac_rotation(r0: np.ndarray, r1: np.ndarray, inlier_deg: float, iterations: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return (R with r1 ~ R r0, inlier mask) for (N >= 2, 3) unit bearings: 2-point
    RANSAC over Kabsch fits, refined on the inliers."""
    cos_thr = np.cos(np.radians(inlier_deg))
    best = np.zeros(len(r0), dtype=bool)
    for _ in range(iterations):
        i = rng.choice(len(r0), 2, replace=False)
        inl = np.sum(r1 * (r0 @ kabsch_rotation(r0[i], r1[i]).T), axis=1) > cos_thr
        if inl.sum() > best.sum():
            best = inl
    if best.sum() < 2:
        best[:] = True
    return kabsch_rotation(r0[best], r1[best]), best


def focal_scale(pairs: list[tuple[np.ndarray, np.ndarray]], k: np.ndarray,
                scales: Optional[np.ndarray] = None, seed: int = 0) -> float:
    """Return the factor on ``k``'s focal lengths under which tracks fit rotations best.

    Each pair ``(u0, u1)`` of (N, 2) tracked pixels is fitted by a rotation (2-point
    RANSAC) with the scaled intrinsics; the score is the mean over pairs of the median
    reprojection residual (px). A turning camera's tracks only fit a rotation for the
    right focal length, so this calibrates a camera without camera_info (pairs with much
    parallax add noise, not bias). ``scales`` defaults to 23 steps from 0.6 to 1.7.
    """
    if scales is None:
        scales = np.exp(np.linspace(np.log(0.6), np.log(1.7), 23))
    scores = []
    for a in scales:
        ka = np.asarray(k, dtype=np.float64).copy()
        ka[0, 0] *= a
        ka[1, 1] *= a
        ki = np.linalg.inv(ka)
        rng = np.random.default_rng(seed)  # the same samples for every scale
        residuals = []
        for u0, u1 in pairs:
            r0 = _unit(np.c_[u0, np.ones(len(u0))] @ ki.T)
            r1 = _unit(np.c_[u1, np.ones(len(u1))] @ ki.T)
            rot, _ = ransac_rotation(r0, r1, 1.0, 32, rng)
            proj = (r0 @ rot.T) @ ka.T
            residuals.append(np.median(np.linalg.norm(proj[:, :2] / proj[:, 2:] - u1, axis=1)))
        scores.append(float(np.mean(residuals)))
    return float(scales[int(np.argmin(scores))])


def rotation_angle_deg(rot: np.ndarray) -> float:
    """Return the angle (degrees) of a 3x3 rotation (or of a 4x4 pose's rotation)."""
    cos = (np.trace(np.asarray(rot)[:3, :3]) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def refine_motion(points: np.ndarray, bearings: np.ndarray, rot: np.ndarray, t: np.ndarray,
                  iterations: int, max_change_deg: float = 3.0
                  ) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Return (R, t, weights) refined jointly so that ``R points + t`` lie along ``bearings``,
    or the unchanged (R, t, None) when the refinement does not lower the median residual
    or turns R by more than ``max_change_deg``.

    Gauss-Newton on the angular residual ``|b x (R X + t)| / |R X + t|`` with a rotation
    update ``exp([w]x) R``, iteratively reweighted against outliers (weights < 1 mark
    them). A rotation fitted to the bearings alone absorbs the parallax of a translating
    camera (on the val split, frames that barely turn got 0.7 degrees of rotation error
    against 0.1 for turning frames); solving for both removes that bias. A wrong global
    scale of ``points`` scales ``t`` and leaves ``R`` unchanged.
    """
    skew_b = _skew(bearings)

    def residuals(r: np.ndarray, tt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rotated = points @ r.T
        moved = rotated + tt
        norm = np.maximum(np.linalg.norm(moved, axis=1), 1e-9)
        return rotated, norm, np.linalg.norm(np.cross(bearings, moved), axis=1) / norm

    start = (rot, t)
    initial = float(np.median(residuals(rot, t)[2]))
    weights = np.ones(len(points))
    for _ in range(iterations):
        rotated, norm, res = residuals(rot, t)
        moved = rotated + t
        weights = _robust_weights(res)
        # b x (Y + w x Y + t) = b x (Y + t) - [b]x [Y]x w + [b]x t
        a = np.concatenate([-skew_b @ _skew(rotated), skew_b], axis=2)
        rhs = -np.cross(bearings, moved)
        row_w = (weights / norm)[:, None]
        step = np.linalg.lstsq((a * row_w[..., None]).reshape(-1, 6),
                               (rhs * row_w).reshape(-1), rcond=None)[0]
        if not np.isfinite(step).all():
            break
        rot = cv2.Rodrigues(step[:3].reshape(3, 1))[0] @ rot
        t = t + step[3:]
    # Keep the refinement only if it fits the tracks better and stays near the start (few
    # or clustered tracks can pull it away).
    if not (np.isfinite(t).all() and rotation_angle_deg(rot @ start[0].T) <= max_change_deg
            and float(np.median(residuals(rot, t)[2])) < initial):
        return start[0], start[1], None
    return rot, t, weights


def _robust_weights(residuals: np.ndarray) -> np.ndarray:
    """Return IRLS weights: 1 within 3 median residuals, falling as 1/r beyond."""
    scale = max(3.0 * float(np.median(residuals)), 1e-4)
    return 1.0 / np.maximum(residuals / scale, 1.0)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _skew(v: np.ndarray) -> np.ndarray:
    """Return the (N, 3, 3) cross-product matrices of (N, 3) vectors."""
    out = np.zeros(v.shape[:-1] + (3, 3))
    out[..., 0, 1], out[..., 0, 2] = -v[..., 2], v[..., 1]
    out[..., 1, 0], out[..., 1, 2] = v[..., 2], -v[..., 0]
    out[..., 2, 0], out[..., 2, 1] = -v[..., 1], v[..., 0]
    return out


def intrinsics_from_pointmap(pts_self: np.ndarray) -> Optional[np.ndarray]:
    """Return the pinhole K (model-input pixels) that best explains an own-view pointmap.

    Fits ``u = fx X/Z + cx`` and ``v = fy Y/Z + cy`` by least squares over the pixels
    with positive depth; None when fewer than 16 such pixels or a non-positive focal.
    """
    h, w = pts_self.shape[:2]
    z = pts_self[..., 2]
    ok = np.isfinite(pts_self).all(axis=-1) & (z > 1e-3)
    if ok.sum() < 16:
        return None
    v, u = np.mgrid[0:h, 0:w]
    k = np.eye(3)
    for axis, coord in ((0, u), (1, v)):
        ratio = pts_self[..., axis][ok] / z[ok]
        a = np.stack([ratio, np.ones_like(ratio)], axis=1)
        (f, c), *_ = np.linalg.lstsq(a, coord[ok].astype(np.float64), rcond=None)
        if not f > 0:
            return None
        k[axis, axis], k[axis, 2] = f, c
    return k


class RgbOdometry:
    """Frame-to-frame camera motion from RGB tracks, with metric scale from a depth map.

    Not thread-safe: drive it from one worker thread, frame by frame in time order.
    """

    def __init__(self, config: OdometryConfig = OdometryConfig()) -> None:
        """Start a new sequence with ``config``."""
        self.config = config
        self.count = 0  # frames since the reset (seeds each frame's RANSAC: reproducible)
        self.pose = np.eye(4)
        self.lost = 0  # frames whose motion could not be estimated since the reset
        self._lost_in_row = 0
        self._prev: Optional[tuple[np.ndarray, np.ndarray, np.ndarray, Any]] = None
        # The last estimated rotation: it seeds the tracker (fast turns move the image
        # further than Lucas-Kanade reaches) and stands in for a frame that fails.
        self._last_rotation = np.eye(3)
        # (u0, u1, K) of the last tracked pair, in tracked-image pixels (for calibration).
        self.last_tracks: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]] = None

    def reset(self, pose: Optional[np.ndarray] = None) -> None:
        """Forget the previous frame; the next one is at ``pose`` (identity by default)."""
        self.pose = np.eye(4) if pose is None else np.asarray(pose, dtype=np.float64).copy()
        self._prev = None
        self._last_rotation = np.eye(3)
        self.last_tracks = None
        self.lost = 0
        self._lost_in_row = 0
        self.count = 0

    def export_state(self) -> dict[str, np.ndarray]:
        """Return everything the next step depends on, as plain arrays.

        Keys: ``pose``, ``last_rotation``, ``counts`` ([frames, lost, lost in a row]) and,
        after a frame,
        ``prev_gray``, ``prev_k``, ``prev_depth`` and ``prev_map`` (the previous frame's
        pixel mapping: sx, sy, ox, oy, h, w, tracking scale).
        """
        out = {'pose': self.pose.copy(), 'last_rotation': self._last_rotation.copy(),
               'counts': np.array([self.count, self.lost, self._lost_in_row], np.int64)}
        if self._prev is not None:
            gray, k, depth, (transform, scale) = self._prev
            out.update(prev_gray=gray.copy(), prev_k=k.copy(),
                       prev_depth=depth.astype(np.float32),
                       prev_map=np.array([*transform.scale, *transform.offset,
                                          *transform.out_size, scale], np.float64))
        return out

    def import_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Continue exactly from :meth:`export_state` output.

        Raises:
            ValueError: for a missing or malformed array (the odometry is then reset).
        """
        shapes = {'pose': (4, 4), 'last_rotation': (3, 3), 'counts': (3,), 'prev_k': (3, 3),
                  'prev_map': (7,)}
        try:
            for key, shape in shapes.items():
                if key in arrays and np.shape(arrays[key]) != shape:
                    raise ValueError(f'odometry {key} must have shape {shape}')
            for key, value in arrays.items():
                if np.asarray(value).dtype.kind == 'f' and not np.isfinite(value).all():
                    raise ValueError(f'odometry {key} has non-finite values')
            self.reset(np.asarray(arrays['pose'], dtype=np.float64))
            self._last_rotation = np.asarray(arrays['last_rotation'], dtype=np.float64).copy()
            self.count, self.lost, self._lost_in_row = (int(v) for v in arrays['counts'])
            if 'prev_gray' in arrays:
                gray = np.asarray(arrays['prev_gray'])
                depth = np.asarray(arrays['prev_depth'], dtype=np.float64)
                if gray.dtype != np.uint8 or gray.ndim != 2 or depth.ndim != 2:
                    raise ValueError('odometry prev_gray/prev_depth must be 2-D (gray uint8)')
                sx, sy, ox, oy, h, w, scale = (float(v) for v in arrays['prev_map'])
                transform = ImageTransform((sx, sy), (ox, oy), (int(h), int(w)))
                self._prev = (gray.copy(), np.asarray(arrays['prev_k'], dtype=np.float64).copy(),
                              depth.copy(), (transform, scale))
        except (KeyError, ValueError) as exc:
            self.reset()
            raise ValueError(f'bad odometry state: {exc}') from None

    def step(self, image: np.ndarray, depth: np.ndarray, intrinsics: np.ndarray,
             transform: Any) -> OdometryStep:
        """Add one frame; return its pose.

        Args:
            image: (H, W, 3) uint8 RGB.
            depth: (h, w) z-depth in metres at the model input (the encoder's own view).
            intrinsics: (3, 3) intrinsics of ``image`` in its pixels.
            transform: the frame's :class:`ImageTransform` (source -> model input pixels),
                used to read ``depth`` at a source pixel.

        Raises:
            ValueError: for an image that is not (H, W, 3) uint8 or a depth not 2-D.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f'image must be HxWx3 uint8, got {image.shape} {image.dtype}')
        if depth.ndim != 2:
            raise ValueError(f'depth must be 2-D, got {depth.shape}')
        gray, k = self._gray(image, intrinsics)
        tracks = inliers = 0
        tracked = False
        self.last_tracks = None
        self.count += 1
        if self._prev is not None:
            motion, tracks, inliers = self._motion(gray, k)
            if motion is not None:
                tracked = True
                self._last_rotation = motion[:3, :3]
                self._lost_in_row = 0
            else:
                self.lost += 1
                self._lost_in_row += 1
                motion = np.eye(4)
                if self._lost_in_row <= self.config.max_coast_frames:
                    motion[:3, :3] = self._last_rotation  # keep turning as before
            self.pose = self.pose @ np.linalg.inv(motion)
        scale = gray.shape[1] / image.shape[1]
        self._prev = (gray, k, np.asarray(depth, dtype=np.float64), (transform, scale))
        return OdometryStep(self.pose.copy(), tracks, inliers, tracked)

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _depth_at(u: np.ndarray, depth: np.ndarray, mapping: tuple[Any, float]) -> np.ndarray:
        """Return ``depth`` (model input) at (N, 2) tracked-image pixels ``u`` (0 outside):
        tracked pixel -> source pixel -> model-input pixel, nearest."""
        transform, scale = mapping
        mx, my = np.rint(transform.apply_to_pixels((u + 0.5) / scale - 0.5)).astype(np.int64).T
        h, w = depth.shape
        inside = (mx >= 0) & (mx < w) & (my >= 0) & (my < h)
        z = np.zeros(len(u))
        z[inside] = depth[my[inside], mx[inside]]
        return z

    def _gray(self, image: np.ndarray, intrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        k = np.asarray(intrinsics, dtype=np.float64).copy()
        width = image.shape[1]
        if width > self.config.max_width_px:
            s = self.config.max_width_px / width
            size = (max(1, round(image.shape[0] * s)), self.config.max_width_px)
            gray = cv2.resize(gray, size[::-1], interpolation=cv2.INTER_AREA)
            k = ImageTransform((s, s), (0.0, 0.0), size).apply_to_intrinsics(k)
        return gray, k

    def _tracks(self, prev: np.ndarray, cur: np.ndarray, prev_k: np.ndarray, k: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """Return matched (N, 2) pixel positions in the previous and current frame.

        The search starts where the last rotation would move each corner.
        """
        c = self.config
        p0 = cv2.goodFeaturesToTrack(prev, c.max_corners, c.corner_quality,
                                     c.corner_min_distance_px)
        if p0 is None or len(p0) < c.min_tracks:
            return np.zeros((0, 2)), np.zeros((0, 2))
        rays = np.c_[p0[:, 0].astype(np.float64), np.ones(len(p0))] @ np.linalg.inv(prev_k).T
        moved = rays @ (k @ self._last_rotation).T
        guess = p0.copy()
        front = moved[:, 2] > 1e-6
        guess[front, 0] = (moved[front, :2] / moved[front, 2:]).astype(np.float32)
        lk = dict(winSize=(c.window_px, c.window_px), maxLevel=c.pyramid_levels)
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev, cur, p0, guess.astype(np.float32),
                                              flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **lk)
        back, st2, _ = cv2.calcOpticalFlowPyrLK(cur, prev, p1, None, **lk)
        ok = ((st1[:, 0] == 1) & (st2[:, 0] == 1)
              & (np.linalg.norm((back - p0)[:, 0], axis=1) < c.max_forward_backward_px))
        return p0[ok, 0].astype(np.float64), p1[ok, 0].astype(np.float64)

    def _motion(self, gray: np.ndarray, k: np.ndarray
                ) -> tuple[Optional[np.ndarray], int, int]:
        """Return (4x4 motion mapping previous-camera to current-camera coordinates or
        None, tracks, rotation inliers)."""
        c = self.config
        assert self._prev is not None
        prev_gray, prev_k, prev_depth, prev_mapping = self._prev
        u0, u1 = self._tracks(prev_gray, gray, prev_k, k)
        self.last_tracks = (u0, u1, k)
        if len(u0) < c.min_tracks:
            return None, len(u0), 0
        b0 = np.c_[u0, np.ones(len(u0))] @ np.linalg.inv(prev_k).T
        r0 = _unit(b0)
        r1 = _unit(np.c_[u1, np.ones(len(u1))] @ np.linalg.inv(k).T)
        rng = np.random.default_rng([c.seed, self.count])
        rot, inl = ransac_rotation(r0, r1, c.rotation_inlier_deg, c.ransac_iterations, rng)
        motion = np.eye(4)
        motion[:3, :3] = rot
        if not c.translation:
            return motion, len(u0), int(inl.sum())
        z = self._depth_at(u0, prev_depth, prev_mapping)
        angle = np.degrees(np.arccos(np.clip(np.sum(r1 * (r0 @ rot.T), axis=1), -1.0, 1.0)))
        use = (angle < c.max_residual_deg) & (z > 0) & np.isfinite(z)
        if use.sum() < c.min_translation_tracks or (c.turn_only_residual_deg > 0 and np.median(
                angle[angle < c.max_residual_deg]) < c.turn_only_residual_deg):
            return motion, len(u0), int(inl.sum())  # rotation only
        rotated = (b0[use] * z[use, None]) @ rot.T
        bearings = r1[use]
        # r1 x (R X0 + t) = 0  ->  [r1]x t = -r1 x (R X0), reweighted against outliers.
        a, rhs = _skew(bearings), -np.cross(bearings, rotated)
        weights = np.ones(len(bearings))
        t = np.zeros(3)
        for _ in range(5):
            t = np.linalg.lstsq((a * weights[:, None, None]).reshape(-1, 3),
                                (rhs * weights[:, None]).reshape(-1), rcond=None)[0]
            moved = rotated + t
            weights = _robust_weights(np.linalg.norm(np.cross(bearings, moved), axis=1)
                                      / np.maximum(np.linalg.norm(moved, axis=1), 1e-9))
        if c.refine_rotation_iterations > 0 and np.isfinite(t).all():
            rot, t, _ = refine_motion(b0[use] * z[use, None], bearings, rot, t,
                                      c.refine_rotation_iterations)
            motion[:3, :3] = rot
        if not np.isfinite(t).all() or np.linalg.norm(t) > c.max_step_m:
            return None, len(u0), int(inl.sum())
        motion[:3, 3] = t
        return motion, len(u0), int(inl.sum())
