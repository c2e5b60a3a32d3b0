"""Top-down PNG map of the trajectory, keyframes, goal and planned route (matplotlib Agg).

Coordinates are ground-plane metres (see
:class:`vlm3r_ros.planning.trajectory_graph.GroundPlane`): plane x to the right, plane y up
the page, i.e. seen from above with the up axis pointing at the viewer. The figure is built
without pyplot, so drawing is safe from worker threads and leaves no global state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar
from numpy.typing import ArrayLike, NDArray

from vlm3r_ros.planning.trajectory_graph import EDGE_REVISIT, TrajectoryGraph

PATH_COLOUR = '#e6194b'
TRAJECTORY_COLOUR = '#7f7f7f'
KEYFRAME_COLOUR = '#1f77b4'
START_COLOUR = '#2ca02c'
GOAL_COLOUR = '#ffbf00'
OBJECT_COLOUR = '#8c564b'
GRAPH_COLOUR = '#c7c7c7'
REVISIT_COLOUR = '#9467bd'

Objects = Mapping[str, ArrayLike] | Sequence[tuple[str, ArrayLike]]


def _xy(points: ArrayLike | None) -> NDArray[np.float64]:
    """Return points as an (N, 2) float array (extra columns dropped); None gives (0, 2)."""
    if points is None:
        return np.zeros((0, 2))
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2))
    arr = arr.reshape(-1, arr.shape[-1]) if arr.ndim > 1 else arr.reshape(1, -1)
    if arr.shape[1] < 2:
        raise ValueError(f'points need at least 2 columns, got shape {arr.shape}')
    return arr[:, :2]


def nice_length(span_m: float) -> float:
    """Return a 1/2/5 x 10^k length close to a fifth of ``span_m`` (for the scale bar)."""
    target = max(span_m / 5.0, 1e-3)
    exponent = math.floor(math.log10(target))
    for mantissa in (5.0, 2.0, 1.0):
        if mantissa * 10.0 ** exponent <= target:
            return mantissa * 10.0 ** exponent
    return 10.0 ** exponent


def graph_layers(graph: TrajectoryGraph) -> tuple[NDArray[np.float64], NDArray[np.float64],
                                                  NDArray[np.bool_]]:
    """Return ``(nodes_xy (N, 2), segments (E, 2, 2), is_revisit (E,))`` of a graph."""
    _, nodes_xy = graph.node_positions()
    edges = graph.edges()
    segments = np.array([[graph.node(a).plane_xy, graph.node(b).plane_xy] for a, b, _ in edges]
                        ).reshape(-1, 2, 2)
    revisit = np.array([kind == EDGE_REVISIT for _, _, kind in edges], dtype=bool)
    return nodes_xy, segments, revisit


def draw_route_map(trajectory_xy: ArrayLike | None, keyframes_xy: ArrayLike | None,
                   goal_xy: ArrayLike | None, path_xy: ArrayLike | None,
                   out_png: str | Path, labels: Sequence[str] | None = None,
                   objects: Objects | None = None, *,
                   graph: TrajectoryGraph | None = None, start_xy: ArrayLike | None = None,
                   title: str | None = None, figsize: tuple[float, float] = (6.0, 6.0),
                   dpi: int = 100) -> Path:
    """Draw the map and write it to ``out_png``; return the written path.

    ``trajectory_xy`` (N, 2) is drawn as a thin line, ``keyframes_xy`` (K, 2) as triangles
    labelled with ``labels`` (K strings) when given, ``objects`` (name -> xy) as labelled
    squares, ``goal_xy`` as a star and ``path_xy`` (M, 2) as a bold line. The start marker
    is ``start_xy``, else the path's first point, else the trajectory's last point. With
    ``graph`` its nodes and edges (revisit edges dashed) are drawn underneath. Parent
    folders are created. Raises ValueError on malformed inputs (e.g. a label count that
    does not match the keyframes).
    """
    traj, keys, path = _xy(trajectory_xy), _xy(keyframes_xy), _xy(path_xy)
    goal = _xy(goal_xy)
    if labels is not None and len(labels) != len(keys):
        raise ValueError(f'{len(labels)} labels for {len(keys)} keyframes')
    items = list(objects.items()) if isinstance(objects, Mapping) else list(objects or ())
    obj_xy = _xy([p for _, p in items]) if items else np.zeros((0, 2))
    if start_xy is not None:
        start = _xy(start_xy)
    elif len(path):
        start = path[:1]
    else:
        start = traj[-1:]

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    extent = [traj, keys, path, goal, obj_xy, start]
    if graph is not None and len(graph):
        nodes_xy, segments, revisit = graph_layers(graph)
        extent.append(nodes_xy)
        if len(segments):
            ax.add_collection(LineCollection(segments[~revisit], colors=GRAPH_COLOUR,
                                             linewidths=0.8, zorder=1, label='graph edges'))
            if revisit.any():
                ax.add_collection(LineCollection(segments[revisit], colors=REVISIT_COLOUR,
                                                 linewidths=0.8, linestyles='dashed', zorder=1,
                                                 label='revisit edges'))
        ax.scatter(nodes_xy[:, 0], nodes_xy[:, 1], s=6, color=GRAPH_COLOUR, zorder=1,
                   label='graph nodes')
    if len(traj):
        ax.plot(traj[:, 0], traj[:, 1], '-', color=TRAJECTORY_COLOUR, lw=1.0, zorder=2,
                label='trajectory')
    if len(path):
        ax.plot(path[:, 0], path[:, 1], '-', color=PATH_COLOUR, lw=3.5, zorder=3,
                solid_capstyle='round', label='planned path')
    if len(keys):
        ax.scatter(keys[:, 0], keys[:, 1], marker='^', s=40, color=KEYFRAME_COLOUR, zorder=4,
                   label='keyframes')
        for text, (x, y) in zip(labels or (), keys):
            ax.annotate(str(text), (x, y), xytext=(3, 3), textcoords='offset points',
                        fontsize=7, color=KEYFRAME_COLOUR)
    if len(obj_xy):
        ax.scatter(obj_xy[:, 0], obj_xy[:, 1], marker='s', s=30, color=OBJECT_COLOUR, zorder=4,
                   label='objects')
        for (name, _), (x, y) in zip(items, obj_xy):
            ax.annotate(str(name), (x, y), xytext=(3, -9), textcoords='offset points',
                        fontsize=7, color=OBJECT_COLOUR)
    if len(start):
        ax.scatter(start[:, 0], start[:, 1], marker='o', s=70, color=START_COLOUR,
                   edgecolors='black', zorder=5, label='start')
    if len(goal):
        ax.scatter(goal[:, 0], goal[:, 1], marker='*', s=260, color=GOAL_COLOUR,
                   edgecolors='black', zorder=6, label='goal')

    pts = np.concatenate(extent)
    if len(pts):
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        centre, half = (lo + hi) / 2.0, max(float((hi - lo).max()) / 2.0, 0.5) * 1.15
    else:
        centre, half = np.zeros(2), 1.0
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] - half, centre[1] + half)
    ax.set_aspect('equal')
    ax.grid(True, lw=0.3, alpha=0.5)
    ax.set_xlabel('x [m]')
    ax.set_ylabel('y [m]')
    bar = nice_length(2.0 * half)
    ax.add_artist(AnchoredSizeBar(ax.transData, bar, f'{bar:g} m', 'lower right',
                                  pad=0.4, frameon=False, size_vertical=bar / 30.0))
    if title:
        ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        # Outside the axes, so the legend never hides map content.
        ax.legend(loc='upper left', bbox_to_anchor=(1.02, 1.0), fontsize=7, borderaxespad=0.0)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format='png')
    return out
