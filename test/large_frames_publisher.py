"""Publish raw rgb8 frames from a process of their own (best-effort, sensor-data QoS).

    python test/large_frames_publisher.py TOPIC COUNT [--rate 30] [--width 640] [--height 480]

Frame i is stamped 1 s + i / rate, so a subscriber can tell from the stamps which frames
it missed. Waits for a subscriber first; prints 'published N'. Used by
test_node_input_checks.py to measure transport loss between processes.
"""
import argparse
import time

import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image


def main() -> None:
    """Publish the frames; exit 1 when nobody subscribed within 10 s."""
    parser = argparse.ArgumentParser()
    parser.add_argument('topic')
    parser.add_argument('count', type=int)
    parser.add_argument('--rate', type=float, default=30.0)
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    args = parser.parse_args()
    rclpy.init(args=[])
    node = rclpy.create_node('large_frames_publisher')
    pub = node.create_publisher(Image, args.topic, qos_profile_sensor_data)
    end = time.monotonic() + 10.0
    while pub.get_subscription_count() == 0:
        if time.monotonic() > end:
            raise SystemExit(1)
        time.sleep(0.05)
    time.sleep(1.0)  # let the subscriber match this writer back
    w, h = args.width, args.height
    data = np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8).tobytes()
    period_ns = int(round(1e9 / args.rate))
    started = time.monotonic()
    for i in range(args.count):
        stamp_ns = 1_000_000_000 + i * period_ns
        msg = Image(height=h, width=w, encoding='rgb8', step=w * 3, data=data)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        pub.publish(msg)
        delay = started + (i + 1) / args.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    time.sleep(0.5)
    print(f'published {args.count}', flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == '__main__':
    main()
