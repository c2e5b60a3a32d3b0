"""vlm3r-replay: play a rosbag2 (sqlite3 or mcap) into ROS topics without a ROS install.

    vlm3r-replay BAG [--rate 2.0 | --rate 0] [--paced [ingest|geometry]] [--loop N] [--clock]
                     [--remap /camera/image_raw:=/robot/image_raw] [--topics T ...]
                     [--frame-timeout S] [--dds-profile auto|FILE|none]

Messages are published as the serialized CDR bytes stored in the bag (no decode and
re-encode). Messages sharing a log time are published calibration, depth and pose
first and the colour image last, so a node that takes messages as they arrive pairs
each frame with its own camera_info and depth. ``--rate`` scales real time (0: as fast as possible);
``--paced`` waits for the node's status to count each colour frame (``ingest``: received;
``geometry``: processed by the geometry encoder) so nothing is dropped on a slow
machine, at most ``--frame-timeout`` per frame (a frame lost on the way is written off
and counted, and the replay goes on); ``--dds-profile`` (default: the shipped Fast DDS
large-data profile) lets large raw frames reach a best-effort subscriber; ``--clock``
publishes ``/clock`` for nodes with ``use_sim_time``; ``--loop`` repeats the bag (stamps go backwards, which the node treats as a reset).
"""
from __future__ import annotations

import argparse
import bisect
import importlib
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.highlevel import AnyReader
from rosgraph_msgs.msg import Clock

from vlm3r_ros.node.ros_convert import ns_to_stamp, stamp_to_ns
from vlm3r_ros.tools.dds_profile import apply_large_data_profile

COLOUR_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
PACE_MODES = ('ingest', 'geometry')


@dataclass(frozen=True)
class BagMessage:
    """One stored message: topic, ROS type name, log time and serialized CDR bytes."""

    topic: str
    msgtype: str
    stamp_ns: int
    data: bytes


def is_colour_frame(topic: str, msgtype: str) -> bool:
    """Return True for a colour image message (an image type on a topic not named depth)."""
    return msgtype in COLOUR_TYPES and 'depth' not in topic


def read_messages(bag: Path, topics: set[str] | None = None) -> Iterator[BagMessage]:
    """Yield the bag's messages in log-time order (optionally only ``topics``)."""
    with AnyReader([Path(bag)]) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        if not conns:
            return
        for conn, stamp, raw in reader.messages(connections=conns):
            yield BagMessage(conn.topic, conn.msgtype, int(stamp), bytes(raw))


def frame_ordered(messages: Iterable[BagMessage]) -> Iterator[BagMessage]:
    """Yield ``messages`` with, among those sharing a log time, colour frames last.

    A node uses the newest camera_info and depth for the next colour frame, so a frame's
    own calibration and depth must arrive before it. Order is otherwise unchanged.
    """
    group: list[BagMessage] = []
    for msg in messages:
        if group and msg.stamp_ns != group[0].stamp_ns:
            yield from sorted(group, key=lambda m: is_colour_frame(m.topic, m.msgtype))
            group = []
        group.append(msg)
    yield from sorted(group, key=lambda m: is_colour_frame(m.topic, m.msgtype))


def colour_frame_bytes(bag: Path) -> int:
    """Return the serialized size of the bag's first colour frame (0 when there is none)."""
    with AnyReader([Path(bag)]) as reader:
        conns = [c for c in reader.connections if is_colour_frame(c.topic, c.msgtype)]
        for _conn, _stamp, raw in reader.messages(connections=conns):
            return len(raw)
    return 0


def bag_summary(bag: Path) -> tuple[dict[str, str], int, int]:
    """Return ({topic: type}, message count, duration ns) of a bag.

    Raises rosbags' ReaderError (or FileNotFoundError) when ``bag`` is not a readable bag.
    """
    with AnyReader([Path(bag)]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        return types, reader.message_count, reader.duration


def message_class(msgtype: str) -> Any:
    """Return the Python class for a ROS type name like 'sensor_msgs/msg/Image'.

    Raises ImportError or AttributeError when the interface is not installed.
    """
    package, kind, name = msgtype.split('/')
    return getattr(importlib.import_module(f'{package}.{kind}'), name)


def parse_remaps(items: list[str]) -> dict[str, str]:
    """Return {from: to} from 'FROM:=TO' items; raises ValueError on a malformed one."""
    out = {}
    for item in items:
        src, sep, dst = item.partition(':=')
        if not sep or not src or not dst:
            raise ValueError(f'remap must look like FROM:=TO, got {item!r}')
        out[src] = dst
    return out


class NodeMonitor:
    """Follow a vlm3r_node's SceneStatus (``<node>/status``) and model diagnostics.

    ``geometry_frames`` (frames the geometry encoder processed) is only published in the
    node's ``/diagnostics`` model entry, so both topics are read. Callbacks run on the
    executor spinning ``node``; waiting happens on the caller's thread.
    """

    def __init__(self, node: Node, node_name: str) -> None:
        """Subscribe on ``node`` to the status and diagnostics of ``node_name``
        (fully qualified, e.g. '/vlm3r_node' or '/robot1/vlm3r_node')."""
        from vlm3r_ros.msg import SceneStatus
        self.node_name = '/' + node_name.strip('/')
        self.status: Any = None
        self.geometry_frames: int | None = None
        self.updates = 0
        self.period_s: float | None = None  # between the last two statuses (header stamps)
        self.status_mono: float | None = None  # when the last status arrived (monotonic)
        self._cv = threading.Condition()
        self._subs = [
            node.create_subscription(SceneStatus, f'{self.node_name}/status',
                                     self._on_status, 10),
            node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 10)]

    def _on_status(self, msg: Any) -> None:
        with self._cv:
            if self.status is not None:
                dt = (stamp_to_ns(msg.header.stamp) - stamp_to_ns(self.status.header.stamp)) / 1e9
                self.period_s = dt if dt > 0 else self.period_s
            self.status = msg
            self.status_mono = time.monotonic()
            self.updates += 1
            self._cv.notify_all()

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for entry in msg.status:
            if entry.name != f'{self.node_name}: model':
                continue
            for kv in entry.values:
                if kv.key == 'geometry_frames':
                    with self._cv:
                        self.geometry_frames = int(kv.value)
                        self.updates += 1
                        self._cv.notify_all()

    def ingested(self) -> int | None:
        """Return frames received plus rejected (None before the first status)."""
        s = self.status
        return None if s is None else int(s.frames_received) + int(s.frames_rejected)

    def processed(self) -> int | None:
        """Return geometry frames plus rejected frames (None until both were seen)."""
        s, g = self.status, self.geometry_frames
        return None if s is None or g is None else g + int(s.frames_rejected)

    def wait(self, predicate: Callable[['NodeMonitor'], bool], timeout_s: float,
             poll_s: float = 0.2) -> bool:
        """Block until ``predicate(self)`` holds; False after ``timeout_s``.

        The predicate is checked on every update and at least every ``poll_s`` (it may
        depend on time as well as on the node's counters).
        """
        end = time.monotonic() + timeout_s
        with self._cv:
            while not predicate(self):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, poll_s))
        return True


class StatusPacer:
    """A ``wait_ingested`` for :class:`Replayer` that keeps the bag a few frames ahead
    of the node at most.

    ``mode`` 'ingest' counts frames the node received; 'geometry' counts frames its
    geometry encoder processed. The encoder keeps only the newest waiting frame, so only
    a window of 1 in geometry mode guarantees that every frame gets geometry (a frame
    that arrives before the encoder took the previous one replaces it). Counters are
    read relative to their value at :meth:`start`, so a node that already has frames
    works too.

    A frame lost on the way (a best-effort subscription) is never counted. In ingest
    mode it is written off as ``lost`` as soon as a status that arrived ``latency_s``
    or more after the frame went out still does not count it, so a loss costs at most
    one status period. Every wait is bounded by ``timeout_s`` (per frame): when it runs
    out, the frame is given up (``timeouts``) and the replay goes on. Pacing switches
    itself off only after ``max_timeouts`` consecutive timeouts with no status in between
    (the node is gone).
    """

    def __init__(self, monitor: NodeMonitor, mode: str = 'ingest', window: int = 1,
                 timeout_s: float = 2.0, max_timeouts: int = 3, latency_s: float = 0.3) -> None:
        """Raise ValueError for an unknown mode or a window below 1."""
        if mode not in PACE_MODES:
            raise ValueError(f'pace mode must be one of {PACE_MODES}, got {mode!r}')
        if window < 1:
            raise ValueError('window must be at least 1')
        self.monitor, self.mode, self.window = monitor, mode, window
        self.timeout_s, self.max_timeouts, self.latency_s = timeout_s, max_timeouts, latency_s
        self.base: int | None = None
        self.timeouts = 0
        self.lost = 0
        self.given_up = 0  # frames no longer waited for after a timeout
        self._streak = 0
        self._updates_seen: int | None = None  # monitor updates at the end of the last wait
        self._sent_at: list[float] = []  # when frame i + 1 was published (monotonic)
        self.enabled = True

    def _count(self, monitor: NodeMonitor) -> int | None:
        return monitor.ingested() if self.mode == 'ingest' else monitor.processed()

    def start(self, timeout_s: float = 10.0) -> bool:
        """Wait for the node's counters and take them as the base; False when none came."""
        if not self.monitor.wait(lambda m: self._count(m) is not None, timeout_s):
            self.enabled = False
            return False
        self.base = self._count(self.monitor)
        self._updates_seen = getattr(self.monitor, 'updates', None)
        return True

    def counted(self) -> int:
        """Return how many frames the node counted since :meth:`start`."""
        count = self._count(self.monitor)
        return 0 if count is None or self.base is None else count - self.base

    def done(self) -> int:
        """Return the frames the node took since :meth:`start`, lost and given-up ones
        included."""
        counted = self.counted()
        if self.mode == 'ingest':
            seen = getattr(self.monitor, 'status_mono', None)
            if seen is not None:
                overdue = bisect.bisect_right(self._sent_at, seen - self.latency_s)
                self.lost = max(overdue - counted, 0)
        return max(counted + self.lost, self.given_up)

    def _wait_done(self, target: int) -> bool:
        if not self.enabled:
            return False
        if self.base is None and not self.start(self.timeout_s):
            return False
        ok = self.monitor.wait(lambda _m: self.done() >= target, self.timeout_s)
        updates = getattr(self.monitor, 'updates', None)
        silent = updates is not None and updates == self._updates_seen
        self._updates_seen = updates
        if ok:
            self._streak = 0
            return True
        self.timeouts += 1
        self.given_up = max(self.given_up, target)  # go on with the next frame
        self._streak = self._streak + 1 if silent else 0
        if self._streak >= self.max_timeouts:
            self.enabled = False  # no status at all: the node is gone, stop waiting
        return False

    def __call__(self, n: int) -> bool:
        """Note frame ``n`` as published now, then block until the node took frame
        ``n - window + 1``; False when it did not."""
        self._sent_at.append(time.monotonic())
        return self._wait_done(n - self.window + 1)

    def finish(self, n: int) -> bool:
        """Block until the node took all ``n`` frames; False when it did not."""
        return self._wait_done(n)


class Replayer:
    """Publish a bag's messages on a node, timed by the bag's log times."""

    def __init__(self, node: Node, bag: Path, *, rate: float = 1.0,
                 remaps: dict[str, str] | None = None, topics: set[str] | None = None,
                 clock: bool = False,
                 wait_ingested: Callable[[int], bool] | None = None) -> None:
        """Prepare publishers for every topic in the bag (or only ``topics``).

        ``wait_ingested(n)`` (for pacing) is called after the n-th colour frame (counted
        over all loops) and should block until the consumer has taken it. Raises
        ValueError for a negative rate and what :func:`bag_summary` raises for a bad bag.
        """
        if rate < 0:
            raise ValueError('rate must be >= 0')
        self.node, self.bag, self.rate = node, Path(bag), rate
        self.remaps = remaps or {}
        self.types, self.count, self.duration_ns = bag_summary(self.bag)
        self.topics = topics
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.publishers = {
            topic: node.create_publisher(message_class(t), self.remaps.get(topic, topic), qos)
            for topic, t in self.types.items() if topics is None or topic in topics}
        self.clock_pub = node.create_publisher(Clock, '/clock', 10) if clock else None
        self.wait_ingested = wait_ingested
        self.published = 0
        self.frames = 0
        self.loops = 0

    def output_topic(self, topic: str) -> str:
        """Return the topic a bag topic is published on (after remapping)."""
        return self.remaps.get(topic, topic)

    def wait_for_subscribers(self, timeout_s: float, topics: Iterable[str] | None = None,
                             grace_s: float = 0.3) -> bool:
        """Block until each of ``topics`` (bag names; default: the colour image topics)
        has a subscriber, or ``timeout_s`` passes; return whether they all do.

        A publisher sees the match before the subscriber has matched it back, and a
        best-effort subscriber loses what arrives in between, so after matching this
        waits ``grace_s`` more for discovery to finish on the other side.
        """
        wanted = list(topics) if topics is not None else [
            t for t in self.publishers if is_colour_frame(t, self.types[t])]
        pubs = [self.publishers[t] for t in wanted if t in self.publishers]
        end = time.monotonic() + timeout_s
        while not all(p.get_subscription_count() > 0 for p in pubs):
            if time.monotonic() >= end:
                return False
            time.sleep(0.05)
        time.sleep(grace_s)
        return True

    def play(self, progress: Callable[[int, int], None] | None = None,
             stop: threading.Event | None = None) -> int:
        """Publish the bag once; return the number of messages published."""
        start_wall = time.monotonic()
        first = None
        sent = 0
        for msg in frame_ordered(read_messages(self.bag, self.topics)):
            if stop is not None and stop.is_set():
                break
            first = msg.stamp_ns if first is None else first
            if self.rate > 0:
                delay = start_wall + (msg.stamp_ns - first) / 1e9 / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if self.clock_pub is not None:
                self.clock_pub.publish(Clock(clock=ns_to_stamp(msg.stamp_ns)))
            self.publishers[msg.topic].publish(msg.data)
            sent += 1
            self.published += 1
            if is_colour_frame(msg.topic, msg.msgtype):
                self.frames += 1
                if self.wait_ingested is not None:
                    self.wait_ingested(self.frames)
            if progress is not None:
                progress(sent, self.count)
        self.loops += 1
        return sent


def progress_bar(done: int, total: int, width: int = 40) -> None:
    """Draw a one-line progress bar on stderr (a line per quarter when not a terminal)."""
    tty = sys.stderr.isatty()
    step = 10 if tty else max(1, total // 4)
    if done != total and done % step:
        return
    if not tty:
        sys.stderr.write(f'{done}/{total} messages\n')
        return
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f'\r[{"#" * filled}{"." * (width - filled)}] {done}/{total}')
    if done == total:
        sys.stderr.write('\n')
    sys.stderr.flush()


def status_pacer(node: Node, node_name: str, mode: str = 'ingest', window: int = 1,
                 timeout_s: float = 2.0) -> StatusPacer:
    """Return a :class:`StatusPacer` following ``node_name``'s status on ``node``."""
    return StatusPacer(NodeMonitor(node, node_name), mode, window, timeout_s)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    parser = argparse.ArgumentParser(prog='vlm3r-replay', description=__doc__.splitlines()[0])
    parser.add_argument('bag', type=Path, help='rosbag2 directory (sqlite3 or mcap)')
    parser.add_argument('--rate', type=float, default=1.0,
                        help='playback speed factor; 0 = as fast as possible (default 1)')
    parser.add_argument('--paced', nargs='?', const='ingest', choices=PACE_MODES,
                        help='wait for the node to take each frame: ingest (received, the '
                        'default) or geometry (processed by the encoder); reads its status')
    parser.add_argument('--node', default='/vlm3r_node', help='node whose status paces')
    parser.add_argument('--loop', type=int, default=1, help='play N times (0 = forever)')
    parser.add_argument('--clock', action='store_true', help='publish /clock')
    parser.add_argument('--remap', action='append', default=[], help='FROM:=TO topic remap')
    parser.add_argument('--topics', nargs='*', help='only these bag topics')
    parser.add_argument('--wait', type=float, default=10.0,
                        help='seconds to wait for a subscriber and the node status (default 10)')
    parser.add_argument('--frame-timeout', type=float, default=2.0,
                        help='--paced: longest wait for one frame before going on (s, '
                        'default 2); a frame a later status does not count is written off '
                        'sooner')
    parser.add_argument('--dds-profile', default='auto',
                        help="Fast DDS XML profile: 'auto' (the shipped large-data profile "
                        'config/fastdds_large_data.xml unless FASTDDS_DEFAULT_PROFILES_FILE '
                        "is set), a file, or 'none' (Fast DDS defaults)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Play the bag; return 0 when done, 1 on a bad argument or bag."""
    args = build_parser().parse_args(argv)
    try:
        remaps = parse_remaps(args.remap)
        types, _, _ = bag_summary(args.bag)
    except ValueError as exc:
        print(f'error: {exc}')
        return 1
    except Exception as exc:  # noqa: BLE001 - rosbags raises several types for a bad bag
        print(f'error: cannot read a rosbag2 bag at {args.bag}: {exc}')
        return 1
    if args.loop < 0:
        print('error: --loop must be >= 0')
        return 1
    if not any(is_colour_frame(t, m) for t, m in types.items()):
        print(f'warning: {args.bag} has no colour image topic; nothing will be paced')
    if args.dds_profile != 'none':
        # Before rclpy.init: Fast DDS reads the profile with the first participant.
        chosen = None if args.dds_profile == 'auto' else Path(args.dds_profile)
        if chosen is not None and not chosen.is_file():
            print(f'error: --dds-profile {chosen} is not a file')
            return 1
        if chosen is not None:
            os.environ.pop('FASTRTPS_DEFAULT_PROFILES_FILE', None)
            os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(chosen)
            print(f'Fast DDS profile {chosen}')
        else:
            print(apply_large_data_profile())
    rclpy.init(args=[])  # sys.argv's FROM:=TO would read as rcl remap rules
    node = rclpy.create_node('vlm3r_replay')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        pacer = None
        if args.paced:
            pacer = status_pacer(node, args.node, args.paced, timeout_s=args.frame_timeout)
            if not pacer.start(args.wait):
                print(f'warning: no status from {args.node} within {args.wait:g} s; '
                      'playing unpaced')
        player = Replayer(node, args.bag, rate=args.rate, remaps=remaps,
                          topics=set(args.topics) if args.topics else None, clock=args.clock,
                          wait_ingested=pacer)
        if not player.wait_for_subscribers(args.wait):
            print('warning: no subscriber on the image topic yet; publishing anyway')
        while args.loop == 0 or player.loops < args.loop:
            player.play(progress_bar)
        if pacer is not None and pacer.enabled:
            pacer.finish(player.frames)
        note = ''
        if pacer is not None and pacer.base is not None:
            counted = pacer.counted()
            note = f', {counted} counted by the node'
            if pacer.mode == 'ingest' and counted < player.frames:
                note += f', {player.frames - counted} frame(s) lost on the way'
            if pacer.timeouts:
                note += f', {pacer.timeouts} frame timeout(s)'
        print(f'published {player.published} messages ({player.frames} frames) '
              f'in {player.loops} loop(s){note}')
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        # Join the spinner before destroying what it waits on: a thread still inside
        # rcl's wait when the interpreter exits aborts the process.
        executor.shutdown(timeout_sec=1.0)
        spinner.join(2.0)
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    sys.exit(main())
