"""Back-projection of depth maps to world points and packing of points into voxel keys.

Keyframe selection by maximum coverage (Video-3D LLM) compares frames by the set of
0.1 m voxels their depth reaches in the world frame. This module turns one depth map into
world points and those points into a sorted array of unique ``int64`` voxel keys, once per
frame, with vectorised NumPy only.

Key layout: each integer voxel coordinate ``floor(p / voxel_size)`` is offset by
``KEY_OFFSET`` (2**20) and stored in 21 bits, x in bits 42..62, y in bits 21..41, z in bits
0..20. Representable coordinates are ``KEY_MIN`` .. ``KEY_MAX`` = -1048576 .. 1048575 voxels
per axis (about +-104.8 km at 0.1 m); points outside that range, and non-finite points, are
dropped. Keys are non-negative and ordered lexicographically by (x, y, z).
"""
from __future__ import annotations

import numpy as np

KEY_BITS = 21
KEY_OFFSET = 1 << (KEY_BITS - 1)
KEY_MIN = -KEY_OFFSET
KEY_MAX = KEY_OFFSET - 1
_KEY_MASK = (1 << KEY_BITS) - 1


def points_from_depth(
    depth: np.ndarray,
    K: np.ndarray,
    cam_to_world: np.ndarray,
    stride: int = 1,
    max_depth: float = 20.0,
    keep_grid: bool = False,
) -> np.ndarray:
    """Back-project a metric depth map into world-frame 3D points.

    Uses the pinhole model with OpenCV conventions (pixel ``(u, v)`` = column, row; the
    camera looks along +z): ``p_cam = z * K^-1 [u, v, 1]``, then ``p_world = R p_cam + t``
    from the 4x4 camera-to-world transform. Only every ``stride``-th row and column is used.
    Pixels whose depth is NaN, infinite, ``<= 0`` or ``> max_depth`` are skipped.

    Args:
        depth: (H, W) depth in metres (any float dtype; integer millimetre maps must be
            converted by the caller).
        K: (3, 3) camera intrinsics of the depth map.
        cam_to_world: (4, 4) homogeneous transform from camera to world coordinates.
        stride: pixel subsampling step, >= 1.
        max_depth: farthest depth kept, in metres.
        keep_grid: return the sampled pixel grid ``(H', W', 3)`` with NaN where the depth
            is invalid (per-pixel world coordinates, e.g. for 3D position encoding).

    Returns:
        (N, 3) float32 world points, N = number of valid sampled pixels, in row-major pixel
        order; or the (H', W', 3) grid with ``keep_grid``.

    Raises:
        ValueError: on wrong shapes, a non-positive stride or max_depth, or a singular K.
    """
    depth = np.asarray(depth)
    K = np.asarray(K, dtype=np.float64)
    cam_to_world = np.asarray(cam_to_world, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f'depth must be (H, W), got shape {depth.shape}')
    if K.shape != (3, 3):
        raise ValueError(f'K must be (3, 3), got shape {K.shape}')
    if cam_to_world.shape != (4, 4):
        raise ValueError(f'cam_to_world must be (4, 4), got shape {cam_to_world.shape}')
    if int(stride) != stride or stride < 1:
        raise ValueError(f'stride must be a positive integer, got {stride}')
    if not max_depth > 0:
        raise ValueError(f'max_depth must be > 0, got {max_depth}')
    stride = int(stride)
    fx, fy = K[0, 0], K[1, 1]
    if fx == 0 or fy == 0:
        raise ValueError('K has a zero focal length')

    z = depth[::stride, ::stride]
    # NaN compares False, so this one mask drops NaN, inf (> max_depth) and non-positive.
    with np.errstate(invalid='ignore'):
        valid = (z > 0) & (z <= max_depth)
    rows, cols = np.nonzero(np.ones_like(valid) if keep_grid else valid)
    zf = z[rows, cols].astype(np.float32)
    u = cols.astype(np.float32) * stride
    v = rows.astype(np.float32) * stride
    # General K with skew: solve the upper-triangular system directly.
    y_n = (v - np.float32(K[1, 2])) / np.float32(fy)
    x_n = (u - np.float32(K[0, 2]) - np.float32(K[0, 1]) * y_n) / np.float32(fx)
    # World point = z * (R @ [x_n, y_n, 1]) + t, one axis at a time: elementwise NumPy
    # avoids a BLAS (N, 3) @ (3, 3) call whose worker threads stall on busy CPUs.
    R = cam_to_world[:3, :3].astype(np.float32)
    t = cam_to_world[:3, 3].astype(np.float32)
    out = np.empty((zf.size, 3), dtype=np.float32)
    for j in range(3):
        out[:, j] = (R[j, 0] * x_n + R[j, 1] * y_n + R[j, 2]) * zf + t[j]
    if keep_grid:
        out[~valid.reshape(-1)] = np.nan
        return out.reshape(z.shape[0], z.shape[1], 3)
    return out


def voxel_keys(
    points: np.ndarray,
    voxel_size: float = 0.1,
    conf: np.ndarray | None = None,
    min_conf: float | None = None,
) -> np.ndarray:
    """Return the sorted unique packed voxel keys of a point set.

    Args:
        points: (..., 3) points in metres, e.g. (N, 3) or an (H, W, 3) pointmap.
        voxel_size: voxel edge length in metres, > 0.
        conf: optional per-point confidence with the leading shape of ``points``.
        min_conf: if given, only points with ``conf >= min_conf`` are kept (needs ``conf``).

    Returns:
        1-D int64 array of unique keys in ascending order (see the module docstring for the
        layout); empty if no point survives. Non-finite points and points outside the
        representable voxel range are dropped.

    Raises:
        ValueError: on a bad shape, a non-positive voxel_size, or min_conf without conf.
    """
    pts = np.asarray(points)
    if pts.ndim < 1 or pts.shape[-1] != 3:
        raise ValueError(f'points must have shape (..., 3), got {pts.shape}')
    if not voxel_size > 0:
        raise ValueError(f'voxel_size must be > 0, got {voxel_size}')
    lead = pts.shape[:-1]
    pts = pts.reshape(-1, 3)
    keep = None
    if min_conf is not None:
        if conf is None:
            raise ValueError('min_conf given without conf')
        c = np.asarray(conf)
        if c.shape != lead:
            raise ValueError(f'conf shape {c.shape} does not match points {lead}')
        keep = c.reshape(-1) >= min_conf
    # float64 so the division is exact enough for keys far from the origin.
    cols = [np.floor(pts[:, j].astype(np.float64) / float(voxel_size)) for j in range(3)]
    with np.errstate(invalid='ignore'):
        # NaN fails both comparisons; +-inf fails one of them.
        inside = (cols[0] >= KEY_MIN) & (cols[0] <= KEY_MAX)
        for c in cols[1:]:
            inside &= (c >= KEY_MIN) & (c <= KEY_MAX)
    keep = inside if keep is None else keep & inside
    gx, gy, gz = ((c[keep].astype(np.int64) + KEY_OFFSET) for c in cols)
    packed = (gx << (2 * KEY_BITS)) | (gy << KEY_BITS) | gz
    return np.unique(packed)


def unpack_voxel_keys(keys: np.ndarray) -> np.ndarray:
    """Return the (N, 3) int64 integer voxel coordinates encoded in ``keys``.

    Inverse of the packing in :func:`voxel_keys`; multiply by the voxel size for the
    voxel's minimum corner in metres.
    """
    k = np.asarray(keys, dtype=np.int64).reshape(-1)
    out = np.empty((k.size, 3), dtype=np.int64)
    out[:, 0] = (k >> (2 * KEY_BITS)) & _KEY_MASK
    out[:, 1] = (k >> KEY_BITS) & _KEY_MASK
    out[:, 2] = k & _KEY_MASK
    return out - KEY_OFFSET


def voxel_keys_per_point(points: np.ndarray, voxel_size: float = 0.1) -> np.ndarray:
    """Return the packed voxel key of every point, shape (N,), -1 where a point is dropped.

    Same packing and the same dropped points (non-finite, outside the representable range)
    as :func:`voxel_keys`, which returns the unique keys of the kept points; this keeps
    the per-point correspondence (e.g. to average colours per voxel).
    """
    pts = np.asarray(points)
    if pts.ndim < 1 or pts.shape[-1] != 3:
        raise ValueError(f'points must have shape (..., 3), got {pts.shape}')
    if not voxel_size > 0:
        raise ValueError(f'voxel_size must be > 0, got {voxel_size}')
    pts = pts.reshape(-1, 3)
    cols = [np.floor(pts[:, j].astype(np.float64) / float(voxel_size)) for j in range(3)]
    with np.errstate(invalid='ignore'):
        inside = np.ones(pts.shape[0], dtype=bool)
        for c in cols:
            inside &= (c >= KEY_MIN) & (c <= KEY_MAX)
    out = np.full(pts.shape[0], -1, dtype=np.int64)
    gx, gy, gz = ((c[inside].astype(np.int64) + KEY_OFFSET) for c in cols)
    out[inside] = (gx << (2 * KEY_BITS)) | (gy << KEY_BITS) | gz
    return out
