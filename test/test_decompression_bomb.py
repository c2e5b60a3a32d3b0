"""Decompression bombs on the real graph: refused from the header, ingest stays at rate.

A compressed frame that declares more pixels than the limit, with its frame header hidden
behind stray bytes (libjpeg skips them), is rejected without being decoded, so a 30 Hz
stream with a bomb every 10 frames still buffers every good frame and the process RSS
does not grow by a decoded bomb's size.
"""
from __future__ import annotations

import time

import pytest
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage

from ros_support import client_node, running_node, synthetic_frame, wait_for
from vlm3r_ros.ingest.image_codec import encode_compressed
from vlm3r_ros.node.ros_convert import ns_to_stamp

pytestmark = pytest.mark.ros
START_NS, PERIOD_NS = 1_000_000_000, 33_000_000
GOOD, BOMB_EVERY = 60, 10
BOMB_W, BOMB_H = 8192, 4096  # 100 MB of RGB if decoded; about 0.5 s of CPU


def bomb() -> bytes:
    """Return a small real JPEG whose frame header, behind two stray bytes, declares
    BOMB_W x BOMB_H."""
    data = bytearray(encode_compressed(synthetic_frame(0)))
    sof = data.find(b'\xff\xc0')
    data[sof + 5:sof + 7] = BOMB_H.to_bytes(2, 'big')
    data[sof + 7:sof + 9] = BOMB_W.to_bytes(2, 'big')
    return bytes(data[:sof] + b'\x00\x00' + data[sof:])


def peak_rss_mb(reset: bool = False) -> float:
    """Return this process's peak RSS (VmHWM) in MiB; ``reset`` first restarts the peak."""
    if reset:
        with open('/proc/self/clear_refs', 'w', encoding='ascii') as refs:
            refs.write('5')
    with open('/proc/self/status', encoding='ascii') as status:
        for line in status:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError('VmHWM not found')


def test_bombs_in_a_30hz_stream_are_refused_and_every_good_frame_is_buffered():
    payload = bomb()
    assert len(payload) < 10_000
    with running_node(model_profile='none', image_transport='compressed',
                      qos_depth=10) as (node, ns), client_node() as client:
        pub = client.create_publisher(CompressedImage, f'{ns}/camera/image_raw/compressed',
                                      qos_profile_sensor_data)
        assert wait_for(lambda: pub.get_subscription_count() > 0, 10)
        time.sleep(0.3)
        peak_before = peak_rss_mb(reset=True)
        bombs = 0
        started = time.monotonic()
        for i in range(GOOD):
            if i % BOMB_EVERY == 0:
                msg = CompressedImage(format='jpeg', data=payload)
                msg.header.stamp = ns_to_stamp(START_NS + i * PERIOD_NS - 1000)
                pub.publish(msg)
                bombs += 1
            msg = CompressedImage(format='jpeg', data=encode_compressed(synthetic_frame(i)))
            msg.header.stamp = ns_to_stamp(START_NS + i * PERIOD_NS)
            pub.publish(msg)
            time.sleep(max(0.0, started + (i + 1) / 30.0 - time.monotonic()))
        assert wait_for(lambda: node._rejected >= bombs and len(node.engine.buffer) >= GOOD,
                        5)
        assert node._rejected == bombs
        assert len(node.engine.buffer) == GOOD  # ingest kept up: no good frame lost
        # Nothing near a decoded bomb (100 MB) was ever resident.
        assert peak_rss_mb() - peak_before < 50
