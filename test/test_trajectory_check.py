"""Comparing an RGB-only trajectory (first-camera frame) with the true camera path."""
import numpy as np
import pytest

from vlm3r_ros.eval.scenes import camera_pose
from vlm3r_ros.eval.trajectory_check import check_trajectory, first_camera_to_world, to_first_camera


def _true_path():
    return np.stack([camera_pose((0.5 * i, 1.0, 1.2), 0.3, 0.0) for i in range(5)])


def test_exact_path_in_the_first_camera_frame_has_no_deviation():
    true = _true_path()
    pred = to_first_camera(true)[:, :3, 3]
    check = check_trajectory(pred, true)
    assert check.mean_deviation_m == pytest.approx(0.0, abs=1e-9)
    assert check.predicted_length_m == pytest.approx(2.0) == check.true_length_m
    np.testing.assert_allclose(first_camera_to_world(pred[-1], true[0]), true[-1][:3, 3])


def test_offset_path_deviates_by_the_offset_and_the_world_frame_is_not_the_camera_frame():
    true = _true_path()
    pred = to_first_camera(true)[:, :3, 3] + np.array([0.0, 0.3, 0.0])
    assert check_trajectory(pred, true).mean_deviation_m == pytest.approx(0.3)
    # World coordinates are not first-camera coordinates: no silent alignment is fitted.
    assert check_trajectory(true[:, :3, 3], true).mean_deviation_m > 1.0
    with pytest.raises(ValueError):
        check_trajectory(np.zeros((0, 3)), true)
