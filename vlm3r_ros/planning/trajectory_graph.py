"""Graph of the camera's traversed trajectory and shortest-path planning over it.

The geometry encoder gives a metric camera-to-world pose for every frame. Places the camera
has been are known to be free, so a graph of the traversed trajectory is a conservative
roadmap: planning over it only ever sends the robot along (or across, see below) ground it
has already covered.

Ground plane
    All distances, headings and the A* heuristic live on the ground plane, the plane normal
    to ``up_axis`` (a world-frame vector). The default ``(0, 0, 1)`` is the ROS z-up
    convention. CUT3R's world frame is the first camera's optical frame (x right, y down,
    z forward), so for raw CUT3R poses 'up' is ``(0, -1, 0)`` as long as the first camera
    was held roughly level. Plane coordinates are ``(p . e1, p . e2)`` with
    ``e1 x e2 = up``, so seen from above (up pointing at the viewer) plane angles are
    counter-clockwise and a positive yaw change is a left turn. Unless ``plane_x_axis`` is
    given, ``e1`` is the world basis axis least parallel to ``up``: world x for both
    defaults above. For CUT3R that puts the first camera's right on plane x and its forward
    on plane y, i.e. 'up the page' on a map.

Nodes
    A pose becomes a new node when it is at least ``node_spacing_m`` from the latest node on
    the plane, or its camera heading differs from that node's by at least
    ``heading_change_deg``. Other frames are attached to the latest node.

Edges
    * traversed: between consecutive nodes. The camera moved between them, so the chord is
      taken as free. A jump larger than ``max_jump_m`` (pose glitch, relocalisation, long
      frame gap) starts a new chain instead of adding the edge.
    * revisit (loop closure): between nodes at most ``link_radius_m`` apart on the plane that
      belong to different visits: different chains, or at least ``revisit_min_travel_m`` of
      travel apart along the chain. Assumption: the camera passed within ``link_radius_m``
      of both ends, so the short straight segment between two traversed places is very
      likely free. This is what lets a route shortcut a loop instead of replaying the whole
      history. ``link_radius_m = 0`` disables these edges (pure replay of traversals).

Bounds
    ``max_nodes`` evicts the oldest nodes first; ``remove_before(stamp_ns)`` drops nodes last
    seen before a stamp; the frame-to-node index is capped at ``max_frames``.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import OrderedDict
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

EDGE_TRAVERSED = 'traversed'
EDGE_REVISIT = 'revisit'

# Below this plane distance two points are treated as the same place (no extra path pose,
# no defined direction between them).
_SAME_PLACE_M = 1e-3


class UnreachableReason(StrEnum):
    """Why no path could be planned."""

    EMPTY_GRAPH = 'empty_graph'
    UNKNOWN_NODE = 'unknown_node'
    UNKNOWN_FRAME = 'unknown_frame'
    START_OFF_GRAPH = 'start_off_graph'
    GOAL_OFF_GRAPH = 'goal_off_graph'
    DISCONNECTED = 'disconnected'


class Unreachable(Exception):
    """Raised when the goal cannot be reached over the traversed graph.

    ``reason`` is a machine-readable :class:`UnreachableReason`; the message explains it.
    """

    def __init__(self, reason: UnreachableReason, detail: str) -> None:
        """Store the reason code and a human-readable detail."""
        super().__init__(f'{reason.value}: {detail}')
        self.reason = reason
        self.detail = detail


def wrap_angle(angle_rad: float) -> float:
    """Return ``angle_rad`` wrapped to ``(-pi, pi]``."""
    wrapped = math.remainder(angle_rad, 2.0 * math.pi)
    return math.pi if wrapped == -math.pi else wrapped


def _unit(vector: ArrayLike, name: str) -> FloatArray:
    """Return ``vector`` as a unit float64 3-vector; raises ValueError if it is not one."""
    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    if v.shape != (3,) or not np.all(np.isfinite(v)):
        raise ValueError(f'{name} must be a finite 3-vector, got {vector!r}')
    norm = float(np.linalg.norm(v))
    if norm < 1e-9:
        raise ValueError(f'{name} must be non-zero')
    return v / norm


def _rotation_to_quaternion_xyzw(rot: FloatArray) -> FloatArray:
    """Return the unit quaternion (x, y, z, w) of a proper 3x3 rotation matrix."""
    m = rot
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    # Branch on the largest diagonal term for numerical stability (Shepperd's method).
    if trace > 0.0:
        s = math.sqrt(trace + 1.0) * 2.0
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2.0
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2.0
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2.0
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    quat = np.asarray(q, dtype=np.float64)
    quat /= np.linalg.norm(quat)
    return quat if quat[3] >= 0.0 else -quat


class GroundPlane:
    """Projection of world points and directions onto the plane normal to an up axis."""

    def __init__(self, up_axis: ArrayLike = (0.0, 0.0, 1.0),
                 plane_x_axis: ArrayLike | None = None) -> None:
        """Build the plane basis ``(e1, e2, up)``, right-handed.

        Raises ValueError if ``up_axis`` is zero/non-finite or ``plane_x_axis`` is parallel
        to it.
        """
        self.up = _unit(up_axis, 'up_axis')
        if plane_x_axis is None:
            # The world axis least parallel to up projects onto the plane most stably.
            seed = np.zeros(3)
            seed[int(np.argmin(np.abs(self.up)))] = 1.0
        else:
            seed = _unit(plane_x_axis, 'plane_x_axis')
        e1 = seed - float(seed @ self.up) * self.up
        if float(np.linalg.norm(e1)) < 1e-6:
            raise ValueError('plane_x_axis must not be parallel to up_axis')
        self.e1 = e1 / np.linalg.norm(e1)
        self.e2 = np.cross(self.up, self.e1)

    def to_plane(self, points: ArrayLike) -> FloatArray:
        """Return plane coordinates, shape (..., 2), of world points of shape (..., 3)."""
        p = np.asarray(points, dtype=np.float64)
        return np.stack([p @ self.e1, p @ self.e2], axis=-1)

    def height(self, points: ArrayLike) -> FloatArray:
        """Return the signed height along ``up`` of world points of shape (..., 3)."""
        return np.asarray(points, dtype=np.float64) @ self.up

    def from_plane(self, plane_xy: ArrayLike, height: float | ArrayLike = 0.0) -> FloatArray:
        """Return world points (..., 3) for plane coordinates (..., 2) at ``height``."""
        xy = np.asarray(plane_xy, dtype=np.float64)
        h = np.asarray(height, dtype=np.float64)
        return (xy[..., :1] * self.e1 + xy[..., 1:2] * self.e2
                + np.expand_dims(h, -1) * self.up)

    def yaw_of_direction(self, direction: ArrayLike) -> float | None:
        """Return the plane angle (rad, CCW from e1) of a world direction.

        Returns None when the direction is (nearly) parallel to up and has no heading.
        """
        d = np.asarray(direction, dtype=np.float64)
        x, y = float(d @ self.e1), float(d @ self.e2)
        if math.hypot(x, y) < 0.1 * max(float(np.linalg.norm(d)), 1e-12):
            return None
        return math.atan2(y, x)

    def heading_direction(self, yaw_rad: float) -> FloatArray:
        """Return the world unit vector on the plane at plane angle ``yaw_rad``."""
        return math.cos(yaw_rad) * self.e1 + math.sin(yaw_rad) * self.e2

    def heading_rotation(self, yaw_rad: float) -> FloatArray:
        """Return the 3x3 world rotation whose x axis points along ``yaw_rad``, z along up."""
        d = self.heading_direction(yaw_rad)
        return np.stack([d, np.cross(self.up, d), self.up], axis=1)

    def heading_quaternion(self, yaw_rad: float) -> FloatArray:
        """Return the (x, y, z, w) quaternion of :meth:`heading_rotation` (for Path poses)."""
        return _rotation_to_quaternion_xyzw(self.heading_rotation(yaw_rad))


@dataclass(frozen=True, eq=False)
class TrajectoryNode:
    """One subsampled place on the traversed trajectory."""

    node_id: int
    frame_id: int
    stamp_ns: int
    last_stamp_ns: int
    position: FloatArray
    plane_xy: FloatArray
    yaw_rad: float
    odometer_m: float
    chain_id: int


@dataclass(frozen=True, eq=False)
class PathResult:
    """A planned path.

    ``positions`` are world points (camera centres, shape (N, 3)); ``plane_xy`` their ground
    plane coordinates (N, 2); ``headings_rad`` (N,) the yaw about up for each pose: the
    direction of travel to the next pose, and for the last pose the goal camera's heading
    when the goal was a frame (so the goal is in view on arrival), else the arrival
    direction. ``length_m`` is the ground-plane length, the sum of the segment lengths.
    ``node_ids`` are the graph nodes visited in order (the start and goal positions
    themselves, when added, have no node id).
    """

    node_ids: tuple[int, ...]
    positions: FloatArray
    plane_xy: FloatArray
    headings_rad: FloatArray
    length_m: float


class TrajectoryGraph:
    """Incremental, bounded graph of traversed places with A* planning on the ground plane.

    Not thread-safe: a caller that adds poses and plans from different threads must hold
    one lock around both.
    """

    def __init__(self, node_spacing_m: float = 0.25, link_radius_m: float = 0.6, *,
                 heading_change_deg: float | None = 45.0,
                 revisit_min_travel_m: float | None = None,
                 max_jump_m: float | None = 2.0,
                 snap_radius_m: float = 1.0,
                 max_nodes: int = 4000,
                 max_frames: int = 50_000,
                 up_axis: ArrayLike = (0.0, 0.0, 1.0),
                 plane_x_axis: ArrayLike | None = None,
                 forward_axis_cam: ArrayLike = (0.0, 0.0, 1.0)) -> None:
        """Configure the graph; see the module docstring for what each distance means.

        ``revisit_min_travel_m`` defaults to ``2 * link_radius_m``. ``forward_axis_cam`` is
        the viewing direction in the camera frame (+z for OpenCV/CUT3R cameras).
        ``snap_radius_m`` is how far a start/goal position may be from its nearest node.
        Raises ValueError on a negative distance or non-positive size.
        """
        if node_spacing_m <= 0.0:
            raise ValueError('node_spacing_m must be > 0')
        if link_radius_m < 0.0 or snap_radius_m < 0.0:
            raise ValueError('link_radius_m and snap_radius_m must be >= 0')
        if max_nodes < 2 or max_frames < 1:
            raise ValueError('max_nodes must be >= 2 and max_frames >= 1')
        if max_jump_m is not None and max_jump_m <= 0.0:
            raise ValueError('max_jump_m must be > 0 or None')
        self.node_spacing_m = float(node_spacing_m)
        self.link_radius_m = float(link_radius_m)
        self.heading_change_rad = (None if heading_change_deg is None or heading_change_deg <= 0
                                   else math.radians(heading_change_deg))
        self.revisit_min_travel_m = (2.0 * self.link_radius_m if revisit_min_travel_m is None
                                     else float(revisit_min_travel_m))
        self.max_jump_m = max_jump_m
        self.snap_radius_m = float(snap_radius_m)
        self.max_nodes = int(max_nodes)
        self.max_frames = int(max_frames)
        self.plane = GroundPlane(up_axis, plane_x_axis)
        self.forward_axis_cam = _unit(forward_axis_cam, 'forward_axis_cam')
        self.clear()

    # ----------------------------------------------------------------- building

    def clear(self) -> None:
        """Forget every node, edge and frame (e.g. after the geometry encoder resets)."""
        self._nodes: OrderedDict[int, TrajectoryNode] = OrderedDict()
        self._adj: dict[int, dict[int, str]] = {}
        self._grid: dict[tuple[int, int], set[int]] = {}
        self._frames: OrderedDict[int, tuple[int, float]] = OrderedDict()
        self._next_id = itertools.count()
        self._last_node: int | None = None
        self._last_yaw = 0.0
        self._chain = 0
        self._xy_cache: tuple[NDArray[np.int64], FloatArray] | None = None

    def break_chain(self) -> None:
        """Do not link the next pose to the current latest node (tracking gap)."""
        if self._last_node is not None:
            self._last_node = None
            self._chain += 1

    def add_pose(self, frame_id: int, stamp_ns: int, cam_to_world: ArrayLike) -> int:
        """Add one frame's camera-to-world pose (4x4 or 3x4, metric).

        Returns the id of the node the frame is attached to (new or the latest one).
        Raises ValueError on a malformed or non-finite pose.
        """
        pose = np.asarray(cam_to_world, dtype=np.float64)
        if pose.shape not in ((4, 4), (3, 4)) or not np.all(np.isfinite(pose[:3])):
            raise ValueError(f'cam_to_world must be a finite 4x4 or 3x4 matrix, got {pose.shape}')
        position = pose[:3, 3].copy()
        yaw = self.plane.yaw_of_direction(pose[:3, :3] @ self.forward_axis_cam)
        # A camera looking straight up/down has no heading; keep the previous one.
        yaw = self._last_yaw if yaw is None else yaw
        self._last_yaw = yaw
        xy = self.plane.to_plane(position)

        last = self._nodes.get(self._last_node) if self._last_node is not None else None
        if last is not None:
            dist = float(np.linalg.norm(xy - last.plane_xy))
            if self.max_jump_m is not None and dist > self.max_jump_m:
                self.break_chain()
                last = None
            elif (dist < self.node_spacing_m
                  and (self.heading_change_rad is None
                       or abs(wrap_angle(yaw - last.yaw_rad)) < self.heading_change_rad)):
                if stamp_ns > last.last_stamp_ns:
                    self._nodes[last.node_id] = replace(last, last_stamp_ns=stamp_ns)
                self._remember_frame(frame_id, last.node_id, yaw)
                return last.node_id
        node_id = self._new_node(frame_id, stamp_ns, position, xy, yaw, last)
        self._remember_frame(frame_id, node_id, yaw)
        return node_id

    def _new_node(self, frame_id: int, stamp_ns: int, position: FloatArray, xy: FloatArray,
                  yaw: float, last: TrajectoryNode | None) -> int:
        """Create a node, link it to its predecessor and to revisited places; return its id."""
        node_id = next(self._next_id)
        odometer = (0.0 if last is None
                    else last.odometer_m + float(np.linalg.norm(xy - last.plane_xy)))
        node = TrajectoryNode(node_id=node_id, frame_id=frame_id, stamp_ns=stamp_ns,
                              last_stamp_ns=stamp_ns, position=position, plane_xy=xy,
                              yaw_rad=yaw, odometer_m=odometer, chain_id=self._chain)
        self._nodes[node_id] = node
        self._adj[node_id] = {}
        self._xy_cache = None
        if last is not None:
            self._link(node_id, last.node_id, EDGE_TRAVERSED)
        if self.link_radius_m > 0.0:
            for other_id in self._nodes_within(xy, self.link_radius_m):
                other = self._nodes[other_id]
                if other_id == node_id or other_id in self._adj[node_id]:
                    continue
                if (other.chain_id != node.chain_id
                        or abs(node.odometer_m - other.odometer_m) >= self.revisit_min_travel_m):
                    self._link(node_id, other_id, EDGE_REVISIT)
            self._grid.setdefault(self._cell(xy), set()).add(node_id)
        self._last_node = node_id
        while len(self._nodes) > self.max_nodes:
            self._remove_node(next(iter(self._nodes)))
        return node_id

    def _remember_frame(self, frame_id: int, node_id: int, yaw: float) -> None:
        """Index a frame to its node, keeping the index bounded."""
        self._frames[frame_id] = (node_id, yaw)
        self._frames.move_to_end(frame_id)
        while len(self._frames) > self.max_frames:
            self._frames.popitem(last=False)

    def _link(self, a: int, b: int, kind: str) -> None:
        """Add an undirected edge; a traversed edge is never downgraded to a revisit."""
        if self._adj[a].get(b) == EDGE_TRAVERSED:
            return
        self._adj[a][b] = kind
        self._adj[b][a] = kind

    def _cell(self, xy: FloatArray) -> tuple[int, int]:
        """Return the grid cell (side ``link_radius_m``) holding a plane point."""
        return (math.floor(xy[0] / self.link_radius_m), math.floor(xy[1] / self.link_radius_m))

    def _nodes_within(self, xy: FloatArray, radius: float) -> list[int]:
        """Return node ids within ``radius`` (<= link radius) of ``xy`` on the plane."""
        cx, cy = self._cell(xy)
        found = []
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for nid in self._grid.get((cx + dx, cy + dy), ()):
                    if float(np.linalg.norm(self._nodes[nid].plane_xy - xy)) <= radius:
                        found.append(nid)
        return sorted(found)

    def _remove_node(self, node_id: int) -> None:
        """Delete a node, its edges and (lazily) its frame index entries."""
        node = self._nodes.pop(node_id)
        for other in self._adj.pop(node_id):
            self._adj[other].pop(node_id, None)
        if self.link_radius_m > 0.0:
            cell = self._grid.get(self._cell(node.plane_xy))
            if cell is not None:
                cell.discard(node_id)
                if not cell:
                    del self._grid[self._cell(node.plane_xy)]
        if self._last_node == node_id:
            self.break_chain()
        self._xy_cache = None
        # Frames of old nodes sit at the front of the index; drop those that went stale.
        while self._frames and next(iter(self._frames.values()))[0] not in self._nodes:
            self._frames.popitem(last=False)

    def remove_before(self, stamp_ns: int) -> int:
        """Remove nodes last seen before ``stamp_ns``; return how many were removed."""
        old = [nid for nid, n in self._nodes.items() if n.last_stamp_ns < stamp_ns]
        for nid in old:
            self._remove_node(nid)
        return len(old)

    # ----------------------------------------------------------------- saving

    def export_state(self) -> dict[str, np.ndarray]:
        """Return nodes, edges and the frame index as plain arrays (for a saved scene).

        :meth:`import_state` on a graph with the same settings rebuilds this graph exactly
        (node ids, chains, edges, the latest node and heading), so planning continues as if
        nothing happened. :meth:`settings` says which settings must match.
        """
        nodes = list(self._nodes.values())
        edges = [(a, b, 0 if kind == EDGE_TRAVERSED else 1)
                 for a, nbrs in self._adj.items() for b, kind in nbrs.items() if a < b]
        frames = list(self._frames.items())
        return {
            'node_ids': np.array([n.node_id for n in nodes], np.int64),
            'frame_ids': np.array([n.frame_id for n in nodes], np.int64),
            'stamps_ns': np.array([[n.stamp_ns, n.last_stamp_ns] for n in nodes],
                                  np.int64).reshape(-1, 2),
            'positions': np.array([n.position for n in nodes], np.float64).reshape(-1, 3),
            'plane_xy': np.array([n.plane_xy for n in nodes], np.float64).reshape(-1, 2),
            'yaw_odometer': np.array([[n.yaw_rad, n.odometer_m] for n in nodes],
                                     np.float64).reshape(-1, 2),
            'chain_ids': np.array([n.chain_id for n in nodes], np.int64),
            'edges': np.array(edges, np.int64).reshape(-1, 3),
            'frame_index': np.array([[f, node] for f, (node, _) in frames],
                                    np.int64).reshape(-1, 2),
            'frame_yaw': np.array([yaw for _, (_, yaw) in frames], np.float64),
            'cursor': np.array([-1 if self._last_node is None else self._last_node,
                                self._chain], np.int64),
            'last_yaw': np.array([self._last_yaw], np.float64),
        }

    def settings(self) -> dict[str, float | list[float] | None]:
        """Return the settings that shape the graph (a saved graph records them)."""
        return {'node_spacing_m': self.node_spacing_m, 'link_radius_m': self.link_radius_m,
                'heading_change_rad': self.heading_change_rad,
                'revisit_min_travel_m': self.revisit_min_travel_m,
                'max_jump_m': self.max_jump_m, 'up_axis': self.plane.up.tolist()}

    def import_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace this graph by one written by :meth:`export_state`.

        Raises ValueError (the graph is left unchanged) when arrays are
        missing, of the wrong shape, or edges name unknown nodes.
        """
        try:
            ids = np.asarray(arrays['node_ids'], np.int64).reshape(-1)
            n = ids.size
            frame_ids = np.asarray(arrays['frame_ids'], np.int64).reshape(n)
            stamps = np.asarray(arrays['stamps_ns'], np.int64).reshape(n, 2)
            positions = np.asarray(arrays['positions'], np.float64).reshape(n, 3)
            plane_xy = np.asarray(arrays['plane_xy'], np.float64).reshape(n, 2)
            yaw_odo = np.asarray(arrays['yaw_odometer'], np.float64).reshape(n, 2)
            chains = np.asarray(arrays['chain_ids'], np.int64).reshape(n)
            edges = np.asarray(arrays['edges'], np.int64).reshape(-1, 3)
            index = np.asarray(arrays['frame_index'], np.int64).reshape(-1, 2)
            frame_yaw = np.asarray(arrays['frame_yaw'], np.float64).reshape(index.shape[0])
            last_node, chain = (int(v) for v in np.asarray(arrays['cursor']).reshape(2))
            last_yaw = float(np.asarray(arrays['last_yaw']).reshape(1)[0])
        except (KeyError, ValueError) as exc:
            raise ValueError(f'malformed trajectory graph: {exc}') from exc
        known = set(ids.tolist())
        if len(known) != n or not set(edges[:, :2].reshape(-1).tolist()) <= known \
                or not set(index[:, 1].tolist()) <= known \
                or (last_node >= 0 and last_node not in known):
            raise ValueError('malformed trajectory graph: edges or frames name unknown nodes')
        if not (np.isfinite(positions).all() and np.isfinite(plane_xy).all()
                and np.isfinite(yaw_odo).all() and np.isfinite(frame_yaw).all()
                and math.isfinite(last_yaw)):
            raise ValueError('malformed trajectory graph: non-finite positions or headings')
        if np.any(edges[:, 0] == edges[:, 1]) or not np.isin(edges[:, 2], (0, 1)).all():
            raise ValueError('malformed trajectory graph: self-loop or unknown edge kind')
        self.clear()
        for i in range(n):
            node = TrajectoryNode(
                node_id=int(ids[i]), frame_id=int(frame_ids[i]),
                stamp_ns=int(stamps[i, 0]), last_stamp_ns=int(stamps[i, 1]),
                position=positions[i].copy(), plane_xy=plane_xy[i].copy(),
                yaw_rad=float(yaw_odo[i, 0]), odometer_m=float(yaw_odo[i, 1]),
                chain_id=int(chains[i]))
            self._nodes[node.node_id] = node
            self._adj[node.node_id] = {}
            if self.link_radius_m > 0.0:
                self._grid.setdefault(self._cell(node.plane_xy), set()).add(node.node_id)
        for a, b, kind in edges.tolist():
            self._link(a, b, EDGE_TRAVERSED if kind == 0 else EDGE_REVISIT)
        for (frame_id, node_id), yaw in zip(index.tolist(), frame_yaw.tolist()):
            self._frames[frame_id] = (node_id, yaw)
        self._next_id = itertools.count(int(ids.max()) + 1 if n else 0)
        self._last_node = last_node if last_node >= 0 else None
        self._last_yaw = last_yaw
        self._chain = chain

    def renumber_frames(self, offset: int) -> None:
        """Add ``offset`` to every frame id (the frames were renumbered by a restore)."""
        if offset == 0:
            return
        for node_id, node in list(self._nodes.items()):
            self._nodes[node_id] = replace(node, frame_id=node.frame_id + offset)
        self._frames = OrderedDict((f + offset, v) for f, v in self._frames.items())

    # ------------------------------------------------------------------ queries

    def __len__(self) -> int:
        """Return the number of nodes."""
        return len(self._nodes)

    @property
    def node_ids(self) -> list[int]:
        """Return the node ids, oldest first."""
        return list(self._nodes)

    def node(self, node_id: int) -> TrajectoryNode:
        """Return a node; raises KeyError if it does not exist (e.g. was evicted)."""
        return self._nodes[node_id]

    def neighbours(self, node_id: int) -> dict[int, str]:
        """Return ``{neighbour_id: edge_kind}`` of a node; raises KeyError if unknown."""
        return dict(self._adj[node_id])

    def edges(self) -> list[tuple[int, int, str]]:
        """Return every undirected edge once as ``(a, b, kind)`` with ``a < b``."""
        return [(a, b, kind) for a, nbrs in self._adj.items() for b, kind in nbrs.items() if a < b]

    def node_positions(self) -> tuple[NDArray[np.int64], FloatArray]:
        """Return ``(ids (N,), plane_xy (N, 2))`` of all nodes, oldest first."""
        if self._xy_cache is None:
            ids = np.fromiter(self._nodes.keys(), dtype=np.int64, count=len(self._nodes))
            xy = (np.stack([n.plane_xy for n in self._nodes.values()]) if self._nodes
                  else np.zeros((0, 2)))
            self._xy_cache = (ids, xy)
        return self._xy_cache

    def nearest_node(self, position: ArrayLike) -> int | None:
        """Return the node nearest (on the plane) to a world position, or None if empty."""
        found = self._nearest(position)
        return None if found is None else found[0]

    def _nearest(self, position: ArrayLike) -> tuple[int, float] | None:
        """Return ``(node_id, plane distance)`` of the node nearest a world position."""
        ids, xy = self.node_positions()
        if ids.size == 0:
            return None
        d = np.linalg.norm(xy - self.plane.to_plane(np.asarray(position, dtype=np.float64)), axis=1)
        i = int(np.argmin(d))
        return int(ids[i]), float(d[i])

    def node_for_frame(self, frame_id: int) -> int | None:
        """Return the node a frame was attached to, or None if unknown or evicted."""
        entry = self._frames.get(frame_id)
        if entry is None or entry[0] not in self._nodes:
            return None
        return entry[0]

    def frame_yaw(self, frame_id: int) -> float | None:
        """Return the camera heading (rad, on the plane) of a known frame, else None."""
        entry = self._frames.get(frame_id)
        return None if entry is None else entry[1]

    # ----------------------------------------------------------------- planning

    def _edge_length(self, a: int, b: int) -> float:
        """Return the plane distance between two nodes."""
        return float(np.linalg.norm(self._nodes[a].plane_xy - self._nodes[b].plane_xy))

    def shortest_path(self, start_node: int, goal_node: int) -> PathResult:
        """Return the shortest node-to-node path (A*, Euclidean heuristic on the plane).

        Headings are travel directions; the last pose keeps the arrival direction (or the
        node's camera heading for a single-node path). Raises :class:`Unreachable` with
        ``UNKNOWN_NODE`` or ``DISCONNECTED``.
        """
        for nid in (start_node, goal_node):
            if nid not in self._nodes:
                raise Unreachable(UnreachableReason.UNKNOWN_NODE, f'node {nid} is not in the graph')
        goal_xy = self._nodes[goal_node].plane_xy
        tie = itertools.count()
        best = {start_node: 0.0}
        parent: dict[int, int] = {}
        closed: set[int] = set()
        heap = [(float(np.linalg.norm(self._nodes[start_node].plane_xy - goal_xy)), next(tie),
                 start_node)]
        while heap:
            _, _, current = heapq.heappop(heap)
            if current in closed:
                continue
            if current == goal_node:
                break
            closed.add(current)
            for nbr in self._adj[current]:
                if nbr in closed:
                    continue
                g = best[current] + self._edge_length(current, nbr)
                if g < best.get(nbr, math.inf):
                    best[nbr] = g
                    parent[nbr] = current
                    h = float(np.linalg.norm(self._nodes[nbr].plane_xy - goal_xy))
                    heapq.heappush(heap, (g + h, next(tie), nbr))
        else:
            raise Unreachable(UnreachableReason.DISCONNECTED,
                              f'node {goal_node} is not connected to node {start_node} '
                              'over the traversed graph')
        chain = [goal_node]
        while chain[-1] != start_node:
            chain.append(parent[chain[-1]])
        chain.reverse()
        positions = np.stack([self._nodes[n].position for n in chain])
        return self._result(tuple(chain), positions, self._nodes[start_node].yaw_rad, None)

    def _result(self, node_ids: tuple[int, ...], positions: FloatArray, fallback_yaw: float,
                goal_yaw: float | None) -> PathResult:
        """Assemble a PathResult: plane coordinates, headings and length."""
        xy = self.plane.to_plane(positions)
        seg = np.diff(xy, axis=0)
        seg_len = np.linalg.norm(seg, axis=1)
        headings = np.empty(len(xy))
        yaw = fallback_yaw
        for i in range(len(xy) - 1):
            # A zero-length step has no direction; it inherits the previous heading.
            if seg_len[i] > _SAME_PLACE_M:
                yaw = math.atan2(seg[i, 1], seg[i, 0])
            headings[i] = yaw
        headings[-1] = yaw if goal_yaw is None else goal_yaw
        if len(xy) > 1:
            # A pose's heading points to the next pose, so a stationary prefix looks ahead.
            first_move = np.flatnonzero(seg_len > _SAME_PLACE_M)
            if first_move.size:
                headings[:first_move[0]] = headings[first_move[0]]
        return PathResult(node_ids=node_ids, positions=positions, plane_xy=xy,
                          headings_rad=headings, length_m=float(seg_len.sum()))

    def plan(self, start_position: ArrayLike, *, goal_frame_id: int | None = None,
             goal_position: ArrayLike | None = None) -> PathResult:
        """Plan from a world position to a goal frame's node or a goal world position.

        Exactly one of ``goal_frame_id`` / ``goal_position`` must be given (ValueError
        otherwise). The start (and goal position) snap to their nearest node and are kept as
        the first (last) pose when they are not already on it. Raises :class:`Unreachable`:
        ``EMPTY_GRAPH``, ``UNKNOWN_FRAME`` (frame never seen or evicted),
        ``START_OFF_GRAPH`` / ``GOAL_OFF_GRAPH`` (farther than ``snap_radius_m`` from any
        node) or ``DISCONNECTED``.
        """
        if (goal_frame_id is None) == (goal_position is None):
            raise ValueError('give exactly one of goal_frame_id and goal_position')
        start = np.asarray(start_position, dtype=np.float64).reshape(3)
        found = self._nearest(start)
        if found is None:
            raise Unreachable(UnreachableReason.EMPTY_GRAPH, 'no trajectory has been recorded')
        start_node, start_dist = found
        if start_dist > self.snap_radius_m:
            raise Unreachable(UnreachableReason.START_OFF_GRAPH,
                              f'start is {start_dist:.2f} m from the traversed trajectory '
                              f'(snap radius {self.snap_radius_m:.2f} m)')
        goal: FloatArray | None = None
        goal_yaw: float | None = None
        if goal_frame_id is not None:
            goal_node = self.node_for_frame(goal_frame_id)
            if goal_node is None:
                raise Unreachable(UnreachableReason.UNKNOWN_FRAME,
                                  f'frame {goal_frame_id} is not (or no longer) in the graph')
            goal_yaw = self.frame_yaw(goal_frame_id)
        else:
            goal = np.asarray(goal_position, dtype=np.float64).reshape(3)
            goal_node, goal_dist = self._nearest(goal) or (-1, math.inf)  # graph is non-empty
            if goal_dist > self.snap_radius_m:
                raise Unreachable(UnreachableReason.GOAL_OFF_GRAPH,
                                  f'goal is {goal_dist:.2f} m from the traversed trajectory '
                                  f'(snap radius {self.snap_radius_m:.2f} m)')
        core = self.shortest_path(start_node, goal_node)
        parts: list[FloatArray] = []
        if start_dist > _SAME_PLACE_M:
            parts.append(start[None])
        parts.append(core.positions)
        if goal is not None and float(np.linalg.norm(
                self.plane.to_plane(goal) - core.plane_xy[-1])) > _SAME_PLACE_M:
            parts.append(goal[None])
        return self._result(core.node_ids, np.concatenate(parts),
                            self._nodes[start_node].yaw_rad, goal_yaw)

