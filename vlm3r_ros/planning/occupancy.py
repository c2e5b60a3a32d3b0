"""A 2-D occupancy grid on the ground plane from the trajectory and the reconstruction.

What a Nav2 costmap layer (or the static layer) can consume as ``nav_msgs/OccupancyGrid``:

* free (0): cells within ``robot_radius_m`` of the traversed trajectory (the camera went
  there, along the graph's traversed edges) and cells where the reconstruction shows
  only floor (voxels within ``obstacle_min_height_m`` of the floor);
* occupied (100): cells with a voxel between ``obstacle_min_height_m`` and
  ``obstacle_max_height_m`` above the floor seen by at least ``min_hits`` frames (fewer
  are treated as noise), unless the trajectory passed through the cell (traversed beats
  reconstructed: the camera was there);
* unknown (-1): everything else.

The floor is ``camera_height_m`` below the median camera height when that is set, else
the 2nd percentile of the voxel heights (the lowest surfaces seen). Heights and plane
coordinates come from the trajectory graph's :class:`GroundPlane`, so the grid lies in
the plane normal to ``up_axis``; its origin pose carries that plane's orientation
(identity for the ROS z-up convention). Cells are row-major from the origin corner, as
``OccupancyGrid.data`` expects. Plain NumPy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlm3r_ros.planning.trajectory_graph import GroundPlane, _rotation_to_quaternion_xyzw

FREE, OCCUPIED, UNKNOWN = 0, 100, -1


@dataclass(frozen=True)
class GridSettings:
    """How the grid is built (the node's free_space_* parameters)."""

    resolution_m: float = 0.1
    robot_radius_m: float = 0.3
    obstacle_min_height_m: float = 0.1
    obstacle_max_height_m: float = 1.8
    min_hits: int = 2
    camera_height_m: float = 0.0  # 0: estimate the floor from the reconstruction
    max_cells: int = 1000  # most cells per side


@dataclass(frozen=True)
class Grid:
    """An occupancy grid: ``data`` (height, width) int8 in {-1, 0, 100}.

    ``origin_xy`` are the plane coordinates of the corner of cell (0, 0); ``origin`` the
    same corner in world coordinates (at floor height) and ``orientation_xyzw`` the
    rotation from the grid's axes (plane e1, e2, up) to the world.
    """

    data: np.ndarray
    resolution_m: float
    origin_xy: tuple[float, float]
    origin: tuple[float, float, float]
    orientation_xyzw: tuple[float, float, float, float]
    floor_height_m: float

    @property
    def width(self) -> int:
        """Return the number of cells along plane x."""
        return int(self.data.shape[1])

    @property
    def height(self) -> int:
        """Return the number of cells along plane y."""
        return int(self.data.shape[0])


def floor_height(voxel_heights: np.ndarray, camera_heights: np.ndarray,
                 camera_height_m: float) -> float:
    """Return the floor height along up (see the module docstring)."""
    if camera_height_m > 0 and camera_heights.size:
        return float(np.median(camera_heights)) - camera_height_m
    if voxel_heights.size:
        return float(np.percentile(voxel_heights, 2.0))
    if camera_heights.size:
        return float(np.median(camera_heights)) - 1.0
    return 0.0


def segment_samples(a: np.ndarray, b: np.ndarray, step: float) -> np.ndarray:
    """Return points every ``step`` (or closer) from plane point ``a`` to ``b``, both ends."""
    n = max(int(np.ceil(float(np.linalg.norm(b - a)) / step)), 1)
    t = np.linspace(0.0, 1.0, n + 1)[:, None]
    return a[None, :] * (1.0 - t) + b[None, :] * t


def build_grid(voxel_xyz: np.ndarray, voxel_hits: np.ndarray, node_positions: np.ndarray,
               traversed_edges: np.ndarray, plane: GroundPlane,
               settings: GridSettings = GridSettings()) -> Grid | None:
    """Return the grid, or None when there is neither a trajectory nor a voxel.

    ``voxel_xyz`` (N, 3) voxel centres with ``voxel_hits`` (N,); ``node_positions`` (M, 3)
    trajectory node positions and ``traversed_edges`` (E, 2) index pairs into them (the
    graph's traversed edges: consecutive places of one chain).
    """
    res = float(settings.resolution_m)
    xyz = np.asarray(voxel_xyz, dtype=np.float64).reshape(-1, 3)
    hits = np.asarray(voxel_hits).reshape(-1)
    nodes = np.asarray(node_positions, dtype=np.float64).reshape(-1, 3)
    edges = np.asarray(traversed_edges, dtype=np.int64).reshape(-1, 2)
    if xyz.shape[0] == 0 and nodes.shape[0] == 0:
        return None
    floor = floor_height(plane.height(xyz), plane.height(nodes), settings.camera_height_m)
    above = plane.height(xyz) - floor
    obstacle = ((above > settings.obstacle_min_height_m)
                & (above <= settings.obstacle_max_height_m) & (hits >= settings.min_hits))
    ground = np.abs(above) <= settings.obstacle_min_height_m
    voxel_xy = plane.to_plane(xyz)
    node_xy = plane.to_plane(nodes)
    # Traversed samples: the nodes and points along each traversed edge.
    samples = [node_xy] + [segment_samples(node_xy[a], node_xy[b], res * 0.5)
                           for a, b in edges if 0 <= a < len(nodes) and 0 <= b < len(nodes)]
    traversed = np.concatenate(samples) if samples else np.empty((0, 2))
    extent = [traversed - settings.robot_radius_m, traversed + settings.robot_radius_m,
              voxel_xy[obstacle | ground]]
    corners = np.concatenate([e.reshape(-1, 2) for e in extent])
    if corners.shape[0] == 0:
        return None
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    size = np.floor((hi - lo) / res).astype(np.int64) + 1
    if np.any(size > settings.max_cells):
        # Too large: keep max_cells per side centred on the trajectory (else the voxels).
        centre = (traversed.mean(axis=0) if traversed.shape[0] else (lo + hi) / 2.0)
        half = settings.max_cells * res / 2.0
        lo = np.where(size > settings.max_cells, centre - half, lo)
        size = np.minimum(size, settings.max_cells)
    lo = np.floor(lo / res) * res  # cell edges on multiples of the resolution
    size = size + 1
    width, height = int(size[0]), int(size[1])
    data = np.full((height, width), UNKNOWN, dtype=np.int8)

    def cells(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ij = np.floor((xy - lo) / res).astype(np.int64)
        inside = (ij[:, 0] >= 0) & (ij[:, 0] < width) & (ij[:, 1] >= 0) & (ij[:, 1] < height)
        return ij[inside, 1], ij[inside, 0]

    data[cells(voxel_xy[ground])] = FREE
    data[cells(voxel_xy[obstacle])] = OCCUPIED
    if traversed.shape[0]:
        r = settings.robot_radius_m
        k = int(np.ceil(r / res))
        offsets = np.array([(dx, dy) for dx in range(-k, k + 1) for dy in range(-k, k + 1)
                            if (dx * res) ** 2 + (dy * res) ** 2 <= r * r + 1e-12], float)
        disc = (traversed[:, None, :] + offsets[None, :, :] * res).reshape(-1, 2)
        data[cells(disc)] = FREE
    origin = plane.from_plane(lo, floor)
    rotation = np.stack([plane.e1, plane.e2, plane.up], axis=1)
    quat = _rotation_to_quaternion_xyzw(rotation)
    return Grid(data=data, resolution_m=res, origin_xy=(float(lo[0]), float(lo[1])),
                origin=tuple(float(v) for v in origin),
                orientation_xyzw=tuple(float(v) for v in quat), floor_height_m=floor)
