"""Tests for depth back-projection and voxel key packing."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlm3r_ros.pipeline.voxels import (KEY_MAX, KEY_MIN, points_from_depth, unpack_voxel_keys,
                                       voxel_keys)

K = np.array([[100.0, 0.0, 2.0], [0.0, 50.0, 1.0], [0.0, 0.0, 1.0]])


def test_backprojection_identity_pose_hand_values():
    depth = np.full((3, 5), 2.0, dtype=np.float32)
    pts = points_from_depth(depth, K, np.eye(4))
    assert pts.dtype == np.float32 and pts.shape == (15, 3)
    # Row-major order: pixel (u=0, v=0) first -> x = (0-2)*2/100, y = (0-1)*2/50.
    np.testing.assert_allclose(pts[0], [-0.04, -0.04, 2.0], rtol=1e-6)
    # Principal point (u=2, v=1) lies on the optical axis.
    np.testing.assert_allclose(pts[1 * 5 + 2], [0.0, 0.0, 2.0], atol=1e-7)
    np.testing.assert_allclose(pts[-1], [(4 - 2) * 2 / 100, (2 - 1) * 2 / 50, 2.0], rtol=1e-6)


def test_backprojection_applies_pose_and_projects_back():
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.5, 4.0, size=(6, 8)).astype(np.float32)
    angle = 0.7
    T = np.eye(4)
    T[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    T[:3, 3] = [1.0, -2.0, 3.0]
    pts = points_from_depth(depth, K, T)
    cam = (pts - T[:3, 3]) @ T[:3, :3]  # world -> camera
    uvw = cam @ K.T
    uv = uvw[:, :2] / uvw[:, 2:]
    vv, uu = np.mgrid[0:6, 0:8]
    np.testing.assert_allclose(uv, np.stack([uu.ravel(), vv.ravel()], 1), atol=1e-3)
    np.testing.assert_allclose(cam[:, 2], depth.ravel(), rtol=1e-5)


def test_invalid_depth_and_stride_and_max_depth():
    depth = np.ones((4, 4), dtype=np.float32)
    depth[0, 0] = np.nan
    depth[0, 2] = 0.0
    depth[2, 0] = -1.0
    depth[2, 2] = 30.0
    depth[1, 1] = np.inf
    assert points_from_depth(depth, K, np.eye(4)).shape == (16 - 5, 3)
    # stride 2 samples (0,0) (0,2) (2,0) (2,2): all invalid.
    assert points_from_depth(depth, K, np.eye(4), stride=2).shape == (0, 3)
    assert points_from_depth(depth, K, np.eye(4), max_depth=40.0).shape == (16 - 4, 3)
    strided = np.ones((4, 4), dtype=np.float32)
    pts = points_from_depth(strided, K, np.eye(4), stride=2)
    # Sampled pixel u=2 (column index 1 after striding) is at x = 0.
    np.testing.assert_allclose(pts[1, 0], 0.0, atol=1e-7)


@pytest.mark.parametrize('bad', [dict(stride=0), dict(max_depth=0.0)])
def test_backprojection_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        points_from_depth(np.ones((2, 2)), K, np.eye(4), **bad)
    with pytest.raises(ValueError):
        points_from_depth(np.ones((2, 2, 1)), K, np.eye(4))


def test_voxel_keys_unique_sorted_and_roundtrip():
    pts = np.array([[0.05, 0.05, 0.05], [0.01, 0.09, 0.0], [-0.01, 0.0, 0.0],
                    [1.0, -2.0, 0.35]], dtype=np.float32)
    keys = voxel_keys(pts, voxel_size=0.1)
    assert keys.dtype == np.int64
    assert np.all(np.diff(keys) > 0)
    coords = {tuple(c) for c in unpack_voxel_keys(keys).tolist()}
    assert coords == {(0, 0, 0), (-1, 0, 0), (10, -20, 3)}


def test_voxel_keys_drops_nan_and_out_of_range_and_low_conf():
    pts = np.array([[0.0, 0.0, 0.0], [np.nan, 0.0, 0.0], [np.inf, 0, 0],
                    [(KEY_MAX + 1) * 0.1 + 0.05, 0, 0], [KEY_MIN * 0.1 + 0.01, 0, 0],
                    [0.5, 0.5, 0.5]])
    coords = unpack_voxel_keys(voxel_keys(pts, 0.1)).tolist()
    assert sorted(coords) == sorted([[0, 0, 0], [KEY_MIN, 0, 0], [5, 5, 5]])
    conf = np.array([0.9, 1, 1, 1, 1, 0.1])
    coords = unpack_voxel_keys(voxel_keys(pts, 0.1, conf=conf, min_conf=0.5)).tolist()
    assert sorted(coords) == sorted([[0, 0, 0], [KEY_MIN, 0, 0]])
    with pytest.raises(ValueError):
        voxel_keys(pts, 0.1, min_conf=0.5)
    assert voxel_keys(np.empty((0, 3)), 0.1).size == 0


def test_voxel_keys_accepts_pointmap_with_conf_map():
    pm = np.zeros((2, 3, 3), dtype=np.float32)
    pm[1, 2] = [0.25, 0.0, 0.0]
    conf = np.ones((2, 3))
    assert voxel_keys(pm, 0.1, conf=conf, min_conf=0.5).size == 2
    conf[1, 2] = 0.0
    assert voxel_keys(pm, 0.1, conf=conf, min_conf=0.5).size == 1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(*[st.integers(-5000, 5000)] * 3), min_size=1, max_size=50))
def test_voxel_keys_match_python_floor(ints):
    pts = np.array(ints, dtype=np.float64) * 0.037
    keys = voxel_keys(pts, voxel_size=0.1)
    expected = {tuple(int(np.floor(c / 0.1)) for c in p) for p in pts}
    assert {tuple(c) for c in unpack_voxel_keys(keys).tolist()} == expected
    assert keys.size == len(expected)
