"""Nearest-stamp pairing of poses and depth maps."""
import numpy as np
import pytest

from vlm3r_ros.pipeline.poses import NearestStampBuffer, PoseHistory


def test_nearest_within_tolerance_and_bounded():
    buf = NearestStampBuffer(tolerance_ns=10, max_items=3)
    for stamp in (100, 130, 160, 190):
        buf.add(stamp, stamp)
    assert len(buf) == 3 and buf.lookup(100) is None  # oldest evicted
    assert buf.lookup(135) == 130 and buf.lookup(152) == 160 and buf.lookup(175) is None
    buf.add(160, 'replaced')
    assert buf.lookup(160) == 'replaced' and len(buf) == 3


def test_drop_after_keeps_the_new_timeline():
    buf = NearestStampBuffer(tolerance_ns=5)
    for stamp in (1000, 2000, 3000, 12):
        buf.add(stamp, stamp)
    buf.drop_after(10)  # the bag looped back to stamp 10
    assert len(buf) == 1 and buf.lookup(12) == 12


def test_pose_history_validates():
    poses = PoseHistory()
    poses.add(5, np.eye(4))
    with pytest.raises(ValueError):
        poses.add(6, np.full((4, 4), np.nan))
    with pytest.raises(ValueError):
        poses.add(7, np.eye(3))
    np.testing.assert_array_equal(poses.lookup(5), np.eye(4))
