"""Video-3D LLM 3D position encoding of visual tokens from per-pixel world coordinates.

Recipe (LaVi-Lab/Video-3D-LLM, 'avg' + 'discrete' + 'sin3d'): average the world xyz of the
pixels under each visual token, clamp to a fixed box ([-15,-15,-5]..[15,15,5] m), discretise at
0.1 m into voxel indices, encode each axis with `d // 3` sinusoidal features (temperature 10000,
sin on even and cos on odd feature indices, frequencies shared by each sin/cos pair), concatenate
x, y, z and zero-pad to `d`. The result is ADDED to the projected visual tokens.

The reference averages coordinates over the POOLED token grid (27-pixel cells giving 14x14 at
384 px), i.e. the encoding is added after 2x2 pooling; `patch_average_coordinates` does the same
for any token grid by averaging over proportional image cells, so the coordinates line up with
whatever pooling produced the tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def as_points_tensor(world_points: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Return `world_points` as a float32 (H, W, 3) CPU-or-original-device tensor.

    Raises ValueError when the array is not (H, W, 3).
    """
    points = torch.as_tensor(world_points)
    if points.ndim != 3 or points.shape[-1] != 3 or points.shape[0] < 1 or points.shape[1] < 1:
        raise ValueError(f'world_points must have shape (H, W, 3), got {tuple(points.shape)}')
    return points.to(torch.float32)


def patch_average_coordinates(world_points: np.ndarray | torch.Tensor, grid_h: int,
                              grid_w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average the world points inside each cell of a `grid_h` x `grid_w` token grid.

    Non-finite points (invalid depth) are left out of the averages. Returns `(coords, valid)`:
    coords (grid_h * grid_w, 3) float32 in row-major token order and valid (grid_h * grid_w,)
    bool, False for cells without a single finite point (their coordinates are 0).
    Raises ValueError for a malformed array or a grid larger than the image.
    """
    points = as_points_tensor(world_points)
    height, width = points.shape[:2]
    if grid_h < 1 or grid_w < 1 or grid_h > height or grid_w > width:
        raise ValueError(f'grid {grid_h}x{grid_w} does not fit world points of {height}x{width}')
    finite = torch.isfinite(points).all(dim=-1)
    clean = torch.where(finite[..., None], points, torch.zeros((), dtype=points.dtype))
    # Masked mean = pooled(sum of valid points) / pooled(count of valid points).
    summed = F.adaptive_avg_pool2d(clean.permute(2, 0, 1)[None], (grid_h, grid_w))[0]
    weight = F.adaptive_avg_pool2d(finite[None, None].to(points.dtype), (grid_h, grid_w))[0, 0]
    valid = weight > 0
    coords = torch.where(valid[None], summed / weight.clamp_min(1e-12)[None], torch.zeros(()))
    return coords.permute(1, 2, 0).reshape(-1, 3), valid.reshape(-1)


def discretize_coordinates(coords: torch.Tensor, min_xyz: Sequence[float],
                           max_xyz: Sequence[float], voxel_size: float) -> torch.Tensor:
    """Clamp (N, 3) metric coordinates to the box and return rounded voxel indices (float).

    Index 0 is `min_xyz`; e.g. with the default box x and y span 0..300 and z 0..100.
    """
    low = torch.as_tensor(min_xyz, dtype=coords.dtype, device=coords.device)
    high = torch.as_tensor(max_xyz, dtype=coords.dtype, device=coords.device)
    clamped = torch.minimum(torch.maximum(coords, low), high)
    return torch.round((clamped - low) / voxel_size)


def sinusoidal_3d_encoding(coords: torch.Tensor, dim: int,
                           temperature: float = 10000.0) -> torch.Tensor:
    """Encode (N, 3) coordinates into (N, dim) features (float32).

    Per axis `f = dim // 3` features: feature i uses frequency temperature ** (2 * (i // 2) / f)
    and is sin for even i and cos for odd i. Axes are concatenated x, y, z; the last
    `dim - 3 * f` features are zero. Raises ValueError for `dim < 3` or malformed coords.
    """
    if coords.ndim != 2 or coords.shape[-1] != 3:
        raise ValueError(f'coords must have shape (N, 3), got {tuple(coords.shape)}')
    if dim < 3:
        raise ValueError(f'dim must be >= 3, got {dim}')
    feats = dim // 3
    index = torch.arange(feats, dtype=torch.float32, device=coords.device)
    inv_freq = temperature ** (2 * torch.div(index, 2, rounding_mode='floor') / feats)
    angles = coords.to(torch.float32)[:, :, None] / inv_freq  # (N, 3, feats)
    even = (index % 2 == 0)
    encoded = torch.where(even, torch.sin(angles), torch.cos(angles)).reshape(coords.shape[0], -1)
    if encoded.shape[1] < dim:
        encoded = F.pad(encoded, (0, dim - encoded.shape[1]))
    return encoded


def video3d_position_encoding(world_points: np.ndarray | torch.Tensor, grid_h: int, grid_w: int,
                              dim: int, min_xyz: Sequence[float] = (-15.0, -15.0, -5.0),
                              max_xyz: Sequence[float] = (15.0, 15.0, 5.0),
                              voxel_size: float = 0.1,
                              temperature: float = 10000.0) -> torch.Tensor:
    """Return the (grid_h * grid_w, dim) float32 encoding to add to one frame's visual tokens.

    Tokens whose cell holds no finite world point get a zero encoding (no position).
    Raises ValueError for malformed inputs (see the helpers).
    """
    coords, valid = patch_average_coordinates(world_points, grid_h, grid_w)
    indices = discretize_coordinates(coords, min_xyz, max_xyz, voxel_size)
    encoding = sinusoidal_3d_encoding(indices, dim, temperature)
    return encoding * valid[:, None].to(encoding.dtype)
