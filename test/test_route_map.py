"""Tests for the top-down route map PNG."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib import colors
from matplotlib.image import imread

from vlm3r_ros.planning.route_map import PATH_COLOUR, draw_route_map, nice_length
from vlm3r_ros.planning.trajectory_graph import TrajectoryGraph

TRAJ = np.array([(0.1 * k, 0.0) for k in range(31)] + [(3.0, 0.1 * k) for k in range(1, 21)])
KEYS = TRAJ[::10]


def path_pixels(png: Path) -> np.ndarray:
    """Return a boolean mask of pixels drawn in (almost exactly) the path colour."""
    rgb = imread(png)[..., :3]
    return np.all(np.abs(rgb - np.array(colors.to_rgb(PATH_COLOUR))) < 0.02, axis=-1)


def test_png_written_with_path_in_colour(tmp_path: Path) -> None:
    with_path = draw_route_map(TRAJ, KEYS, (3.0, 2.0), TRAJ[::5], tmp_path / 'a' / 'map.png',
                               labels=[f'kf{i}' for i in range(len(KEYS))],
                               objects={'door': (3.3, 0.2), 'sofa': (2.5, 2.2)},
                               title='route')
    assert with_path.exists() and with_path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    img = imread(with_path)
    assert img.shape[:2] == (600, 600)
    assert 5_000 < with_path.stat().st_size < 2_000_000
    assert path_pixels(with_path).sum() > 500
    without = draw_route_map(TRAJ, KEYS, (3.0, 2.0), None, tmp_path / 'none.png')
    assert path_pixels(without).sum() == 0


def test_path_pixels_follow_the_path(tmp_path: Path) -> None:
    # Same extent in both maps (the trajectory spans it); only the path differs.
    bottom = np.array([(0.0, 0.0), (3.0, 0.0)])
    right = np.array([(3.0, 0.0), (3.0, 2.0)])
    a = path_pixels(draw_route_map(TRAJ, KEYS, None, bottom, tmp_path / 'bottom.png'))
    b = path_pixels(draw_route_map(TRAJ, KEYS, None, right, tmp_path / 'right.png'))
    ya, xa = np.nonzero(a)
    yb, xb = np.nonzero(b)

    def spread(v: np.ndarray) -> float:
        # Percentiles ignore the short legend sample drawn in the same colour.
        return float(np.percentile(v, 90) - np.percentile(v, 10))

    # A horizontal path is wide and flat; a vertical one tall and narrow.
    assert spread(xa) > 50 * max(spread(ya), 1.0)
    assert spread(yb) > 50 * max(spread(xb), 1.0)
    assert np.median(xb) > np.median(xa)  # the vertical leg is at the right of the bottom one
    assert np.median(yb) < np.median(ya)  # and above it (image rows grow downwards)


def test_graph_layer_and_empty_inputs(tmp_path: Path) -> None:
    g = TrajectoryGraph(node_spacing_m=0.25, link_radius_m=0.6)
    for i, t in enumerate(np.linspace(0.0, 2 * math.pi, 80)):
        pose = np.eye(4)
        pose[:3, 3] = [math.cos(t), math.sin(t), 1.0]
        g.add_pose(i, i, pose)
    out = draw_route_map(None, None, None, None, tmp_path / 'graph.png', graph=g,
                         figsize=(3.0, 2.0), dpi=50)
    assert imread(out).shape[:2] == (100, 150)
    empty = draw_route_map([], [], None, [], tmp_path / 'empty.png')
    assert empty.exists()
    with pytest.raises(ValueError):
        draw_route_map(TRAJ, KEYS, None, None, tmp_path / 'bad.png', labels=['only one'])


def test_nice_length() -> None:
    assert nice_length(10.0) == 2.0
    assert nice_length(3.0) == 0.5
    assert nice_length(30.0) == 5.0
    assert nice_length(0.4) == pytest.approx(0.05)
