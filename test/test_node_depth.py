"""Depth pairing on the real graph: back-to-back topics in either order, and a looping bag.

camera_info, depth and image are published back to back (the order vlm3r-replay uses),
half the frames with the image before its depth map; every buffered frame must carry the
depth map of its own stamp. Then the stamps jump back (a bag loop): the new timeline's
frames must carry depth from the first one, and the status counts what stayed unpaired.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from ros_support import Collector, client_node, running_node, synthetic_frame, wait_for
from vlm3r_ros.msg import SceneStatus
from vlm3r_ros.node.ros_convert import ns_to_stamp, rgb_to_image

pytestmark = pytest.mark.ros
W, H = 64, 48
PERIOD_NS = 33_000_000


def depth_msg(stamp_ns: int, metres: float) -> Image:
    """Return a 32FC1 depth map filled with ``metres`` (identifies the map it came from)."""
    data = np.full((H, W), metres, np.float32)
    msg = Image(encoding='32FC1', width=W, height=H, step=W * 4, data=data.tobytes())
    msg.header.stamp = ns_to_stamp(stamp_ns)
    return msg


def info_msg(stamp_ns: int) -> CameraInfo:
    """Return a calibrated CameraInfo for the W x H test camera."""
    msg = CameraInfo(width=W, height=H, k=[50.0, 0.0, 32.0, 0.0, 50.0, 24.0, 0.0, 0.0, 1.0])
    msg.header.stamp = ns_to_stamp(stamp_ns)
    return msg


class Publishers:
    """camera_info, depth and image publishers of one client, matched to the node."""

    def __init__(self, client, ns: str) -> None:
        qos = qos_profile_sensor_data
        self.info = client.create_publisher(CameraInfo, f'{ns}/camera/camera_info', qos)
        self.depth = client.create_publisher(Image, f'{ns}/camera/depth', qos)
        self.image = client.create_publisher(Image, f'{ns}/camera/image_raw', qos)
        for pub in (self.info, self.depth, self.image):
            assert wait_for(lambda p=pub: p.get_subscription_count() > 0, 10)
        time.sleep(0.3)

    def frame(self, i: int, stamp_ns: int, metres: float, image_first: bool) -> None:
        """Publish one frame's three messages back to back."""
        self.info.publish(info_msg(stamp_ns))
        image = rgb_to_image(synthetic_frame(i, W, H), stamp_ns)
        if image_first:
            self.image.publish(image)
            self.depth.publish(depth_msg(stamp_ns, metres))
        else:
            self.depth.publish(depth_msg(stamp_ns, metres))
            self.image.publish(image)


def metres_of(stamp_ns: int) -> float:
    """Return the depth value published for a stamp (1 m + 1 mm per period)."""
    return 1.0 + (stamp_ns // PERIOD_NS % 1000) * 0.001


def depth_of(record) -> float | None:
    """Return the constant depth value a buffered frame carries, None without depth."""
    if record.depth is None:
        return None
    return float(np.nanmedian(record.depth))


def test_depth_pairs_in_either_order_and_again_after_a_bag_loop():
    with running_node(model_profile='none', qos_depth=20, store_max_side=0,
                      camera_info_topic='camera/camera_info',
                      depth_topic='camera/depth') as (node, ns), client_node() as client:
        pubs = Publishers(client, ns)
        statuses = Collector(client, SceneStatus, f'{ns}/vlm3r_node/status')
        first = [10_000_000_000 + i * PERIOD_NS for i in range(40)]
        for i, stamp in enumerate(first):
            pubs.frame(i, stamp, metres_of(stamp), image_first=bool(i % 2))
            time.sleep(1 / 30)
        assert wait_for(lambda: len(node.engine.buffer) == len(first), 10)
        records = node.engine.buffer.snapshot()
        paired = [depth_of(r) for r in records]
        assert paired == pytest.approx([metres_of(s) for s in first], abs=1e-4), \
            f'{sum(p is None for p in paired)} of {len(first)} frames lost their depth'

        # The bag loops: stamps jump back 9 s. The buffer resets; depth must pair at once.
        second = [1_000_000_000 + i * PERIOD_NS for i in range(40)]
        for i, stamp in enumerate(second):
            pubs.frame(i, stamp, metres_of(stamp), image_first=bool(i % 2))
            time.sleep(1 / 30)
        assert wait_for(lambda: node.engine.status().buffer_resets == 1
                        and len(node.engine.buffer) == len(second), 10)
        records = node.engine.buffer.snapshot()
        assert [r.stamp_ns for r in records] == second
        paired = [depth_of(r) for r in records]
        assert paired == pytest.approx([metres_of(s) for s in second], abs=1e-4), \
            f'{sum(p is None for p in paired)} of {len(second)} frames lost their depth'
        status = statuses.wait(lambda m: m.depth_received == 80, timeout=5)
        assert (status.depth_unpaired, status.frames_without_depth) == (0, 0)
        assert status.buffer_resets == 1


def test_unpaired_depth_is_counted_in_status():
    with running_node(model_profile='none', depth_topic='camera/depth') as (node, ns), \
            client_node() as client:
        pubs = Publishers.__new__(Publishers)
        pubs.depth = client.create_publisher(Image, f'{ns}/camera/depth',
                                             qos_profile_sensor_data)
        pubs.image = client.create_publisher(Image, f'{ns}/camera/image_raw',
                                             qos_profile_sensor_data)
        for pub in (pubs.depth, pubs.image):
            assert wait_for(lambda p=pub: p.get_subscription_count() > 0, 10)
        time.sleep(0.3)
        statuses = Collector(client, SceneStatus, f'{ns}/vlm3r_node/status')
        # 30 depth maps with no colour frame near them, then 3 frames far from any depth.
        for i in range(30):
            pubs.depth.publish(depth_msg(5_000_000_000 + i * PERIOD_NS, 2.0))
            time.sleep(0.01)
        for i in range(3):
            pubs.image.publish(rgb_to_image(synthetic_frame(i, W, H),
                                            9_000_000_000 + i * PERIOD_NS))
            time.sleep(0.01)
        status = statuses.wait(lambda m: m.depth_received == 30 and m.buffer_length == 3,
                               timeout=10)
        assert status.frames_without_depth == 3
        assert status.depth_unpaired >= 30 - 16  # the held maps are bounded (16)
        assert all(r.depth is None for r in node.engine.buffer.snapshot())
