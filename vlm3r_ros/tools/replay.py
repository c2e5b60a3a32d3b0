"""vlm3r-replay: play a rosbag2 (sqlite3 or mcap) into ROS topics without a ROS install.

    vlm3r-replay BAG [--rate 2.0 | --rate 0] [--paced] [--loop N] [--clock]
                     [--remap /camera/image_raw:=/robot/image_raw] [--topics T ...]

Messages are published as the serialized CDR bytes stored in the bag (no decode and
re-encode). ``--rate`` scales real time (0: as fast as possible); ``--paced`` waits until
the node has ingested each colour frame (reads its SceneStatus) so nothing is dropped on
a slow machine; ``--clock`` publishes ``/clock`` for nodes with ``use_sim_time``;
``--loop`` repeats the bag (stamps go backwards, which the node treats as a reset).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.highlevel import AnyReader
from rosgraph_msgs.msg import Clock

from vlm3r_ros.node.ros_convert import ns_to_stamp


@dataclass(frozen=True)
class BagMessage:
    """One stored message: topic, ROS type name, log time and serialized CDR bytes."""

    topic: str
    msgtype: str
    stamp_ns: int
    data: bytes


def read_messages(bag: Path, topics: set[str] | None = None) -> Iterator[BagMessage]:
    """Yield the bag's messages in log-time order (optionally only ``topics``)."""
    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        for conn, stamp, raw in reader.messages(connections=conns):
            yield BagMessage(conn.topic, conn.msgtype, int(stamp), bytes(raw))


def bag_summary(bag: Path) -> tuple[dict[str, str], int, int]:
    """Return ({topic: type}, message count, duration ns) of a bag."""
    with AnyReader([bag]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        return types, reader.message_count, reader.duration


def message_class(msgtype: str) -> Any:
    """Return the Python class for a ROS type name like 'sensor_msgs/msg/Image'."""
    package, kind, name = msgtype.split('/')
    return getattr(importlib.import_module(f'{package}.{kind}'), name)


def parse_remaps(items: list[str]) -> dict[str, str]:
    """Return {from: to} from 'FROM:=TO' items; raises ValueError on a malformed one."""
    out = {}
    for item in items:
        if ':=' not in item:
            raise ValueError(f"remap must look like FROM:=TO, got {item!r}")
        src, dst = item.split(':=', 1)
        out[src] = dst
    return out


class Replayer:
    """Publish a bag's messages on a node, timed by the bag's log times."""

    def __init__(self, node: Node, bag: Path, *, rate: float = 1.0,
                 remaps: dict[str, str] | None = None, topics: set[str] | None = None,
                 clock: bool = False,
                 wait_ingested: Callable[[int], bool] | None = None) -> None:
        """Prepare publishers for every topic in the bag.

        ``wait_ingested(n)`` (for pacing) is called after the n-th colour frame and should
        block until the consumer has taken it (return False to stop waiting).
        """
        self.node, self.bag, self.rate = node, bag, rate
        self.remaps = remaps or {}
        self.types, self.count, self.duration_ns = bag_summary(bag)
        self.topics = topics
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.publishers = {
            topic: node.create_publisher(message_class(t), self.remaps.get(topic, topic), qos)
            for topic, t in self.types.items() if topics is None or topic in topics}
        self.clock_pub = node.create_publisher(Clock, '/clock', 10) if clock else None
        self.wait_ingested = wait_ingested
        self.published = 0
        self.frames = 0

    def wait_for_subscribers(self, timeout_s: float) -> bool:
        """Block until every image topic has a subscriber (or ``timeout_s`` passes)."""
        end = time.monotonic() + timeout_s
        images = [p for t, p in self.publishers.items() if self.types[t].endswith('Image')]
        while time.monotonic() < end:
            if all(p.get_subscription_count() > 0 for p in images):
                return True
            time.sleep(0.05)
        return False

    def play(self, progress: Callable[[int, int], None] | None = None,
             stop: threading.Event | None = None) -> int:
        """Publish the bag once; return the number of messages published."""
        start_wall = time.monotonic()
        first = None
        sent = 0
        for msg in read_messages(self.bag, self.topics):
            if stop is not None and stop.is_set():
                break
            first = msg.stamp_ns if first is None else first
            if self.rate > 0:
                due = start_wall + (msg.stamp_ns - first) / 1e9 / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if self.clock_pub is not None:
                self.clock_pub.publish(Clock(clock=ns_to_stamp(msg.stamp_ns)))
            self.publishers[msg.topic].publish(msg.data)
            sent += 1
            self.published += 1
            if self.types[msg.topic] in ('sensor_msgs/msg/Image',
                                         'sensor_msgs/msg/CompressedImage') \
                    and 'depth' not in msg.topic:
                self.frames += 1
                if self.wait_ingested is not None:
                    self.wait_ingested(self.frames)
            if progress is not None:
                progress(sent, self.count)
        return sent


def progress_bar(done: int, total: int, width: int = 40) -> None:
    """Draw a one-line progress bar on stderr."""
    if done != total and done % 10:
        return
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f'\r[{"#" * filled}{"." * (width - filled)}] {done}/{total}')
    if done == total:
        sys.stderr.write('\n')
    sys.stderr.flush()


def status_pacer(node: Node, status_topic: str, timeout_s: float = 10.0
                 ) -> Callable[[int], bool]:
    """Return a ``wait_ingested`` that waits for the node's SceneStatus to count n frames.

    The counter is read relative to the first status seen, so a node that already
    received frames works too.
    """
    from vlm3r_ros.msg import SceneStatus
    seen: dict[str, int] = {}
    cv = threading.Condition()

    def on_status(msg: SceneStatus) -> None:
        with cv:
            seen.setdefault('base', int(msg.frames_received))
            seen['now'] = int(msg.frames_received) + int(msg.frames_rejected)
            cv.notify_all()

    node.create_subscription(SceneStatus, status_topic, on_status, 10)

    def wait(n: int) -> bool:
        end = time.monotonic() + timeout_s
        with cv:
            while seen.get('now', -1) - seen.get('base', 0) < n:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                cv.wait(left)
        return True

    return wait


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    parser = argparse.ArgumentParser(prog='vlm3r-replay', description=__doc__.splitlines()[0])
    parser.add_argument('bag', type=Path, help='rosbag2 directory (sqlite3 or mcap)')
    parser.add_argument('--rate', type=float, default=1.0,
                        help='playback speed factor; 0 = as fast as possible (default 1)')
    parser.add_argument('--paced', action='store_true',
                        help="wait for the node to ingest each frame (reads its status)")
    parser.add_argument('--node', default='/vlm3r_node', help='node whose status paces')
    parser.add_argument('--loop', type=int, default=1, help='play N times (0 = forever)')
    parser.add_argument('--clock', action='store_true', help='publish /clock')
    parser.add_argument('--remap', action='append', default=[], help='FROM:=TO topic remap')
    parser.add_argument('--topics', nargs='*', help='only these bag topics')
    return parser


def main(argv: list[str] | None = None) -> int:
    """Play the bag; return 0 when done, 1 on a bad argument or bag."""
    args = build_parser().parse_args(argv)
    try:
        remaps = parse_remaps(args.remap)
    except ValueError as exc:
        print(f'error: {exc}')
        return 1
    if not args.bag.exists():
        print(f'error: no bag at {args.bag}')
        return 1
    rclpy.init(args=None)
    node = rclpy.create_node('vlm3r_replay')
    executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        pacer = status_pacer(node, f'{args.node.rstrip("/")}/status') if args.paced else None
        player = Replayer(node, args.bag, rate=args.rate, remaps=remaps,
                          topics=set(args.topics) if args.topics else None, clock=args.clock,
                          wait_ingested=pacer)
        if not player.wait_for_subscribers(10.0):
            print('warning: no subscriber on the image topic yet; publishing anyway')
        loops = 0
        while args.loop == 0 or loops < args.loop:
            player.play(progress_bar)
            loops += 1
        print(f'published {player.published} messages ({player.frames} frames) '
              f'in {loops} loop(s)')
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    sys.exit(main())
