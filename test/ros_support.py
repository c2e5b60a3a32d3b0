"""Helpers for integration tests on a real ROS graph (rclpy + Fast DDS, one process).

The node under test and a separate client node each spin in their own executor thread,
so every message and service call crosses Fast DDS exactly as between processes.
"""
from __future__ import annotations

import itertools
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np
import rclpy
from rclpy.action import ActionClient as RclpyActionClient
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from vlm3r_ros.msg import SceneStatus
from vlm3r_ros.node.ros_convert import ns_to_stamp, rgb_to_image
from vlm3r_ros.node.vlm3r_node import Vlm3rNode

_names = itertools.count()


class ActionClient(RclpyActionClient):
    """rclpy's ActionClient, safe to create on a node that is already spinning.

    rclpy (action/client.py) adds the client to its node's waitables before it creates
    the client's lock. An executor thread that counts the node's entities in between dies
    with AttributeError, and every later future of that node hangs; this was seen once in a
    full run on a loaded machine. Here the lock exists before the base class runs.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lock = threading.Lock()
        super().__init__(*args, **kwargs)


def ensure_rclpy() -> None:
    """Initialise rclpy once per test process."""
    if not rclpy.ok():
        rclpy.init()


@contextmanager
def running_node(**overrides: Any) -> Iterator[tuple[Vlm3rNode, str]]:
    """Run a Vlm3rNode (autostarted) in a unique namespace; yield (node, namespace)."""
    ensure_rclpy()
    ns = f'/t{next(_names)}_{int(time.monotonic() * 1000) % 100000}'
    overrides.setdefault('image_topic', f'{ns}/camera/image_raw')
    overrides.setdefault('status_period_s', 0.2)
    node = Vlm3rNode(namespace=ns, parameter_overrides=[
        Parameter(k, value=v) for k, v in overrides.items()])
    executor = MultiThreadedExecutor(num_threads=8)
    executor.add_node(node)
    node.autostart()
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        yield node, ns
    finally:
        node._teardown_io()
        node._release()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()


@contextmanager
def client_node() -> Iterator[Node]:
    """Yield a plain node spinning in its own thread, for publishers, subscribers, clients."""
    ensure_rclpy()
    node = rclpy.create_node(f'test_client_{next(_names)}')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        yield node
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()


def call(node: Node, srv_type: Any, name: str, request: Any, timeout: float = 30.0) -> Any:
    """Call a service over DDS and return its response; fail on timeout."""
    client = node.create_client(srv_type, name)
    try:
        assert client.wait_for_service(timeout_sec=10.0), f'service {name} not available'
        future = client.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        assert done.wait(timeout), f'no response from {name} within {timeout} s'
        return future.result()
    finally:
        node.destroy_client(client)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, period: float = 0.02) -> bool:
    """Return True as soon as ``predicate()`` holds, False after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(period)
    return predicate()


class Collector:
    """Subscribe to a topic and keep every message received."""

    def __init__(self, node: Node, msg_type: Any, topic: str, qos: Any = 10) -> None:
        self.messages: list[Any] = []
        self._sub = node.create_subscription(msg_type, topic, self.messages.append, qos)

    def wait(self, predicate: Callable[[Any], bool] = lambda _m: True,
             timeout: float = 10.0) -> Any:
        """Return the first message satisfying ``predicate``; fail after ``timeout``."""
        found: list[Any] = []

        def check() -> bool:
            found[:] = [m for m in list(self.messages) if predicate(m)]
            return bool(found)

        assert wait_for(check, timeout), f'no matching message within {timeout} s'
        return found[0]


def synthetic_frame(i: int, width: int = 64, height: int = 48) -> np.ndarray:
    """Return a deterministic textured RGB frame (different for each i)."""
    y, x = np.mgrid[0:height, 0:width]
    r = (x * 4 + i * 7) % 256
    g = (y * 5 + i * 3) % 256
    b = ((x + y) * 3 + i * 11) % 256
    return np.stack([r, g, b], axis=2).astype(np.uint8)


def stream_into_node(client: Node, ns: str, frames: Any, pause_s: float = 0.08) -> Any:
    """Wait until the node in ``ns`` has its model, publish ``frames`` ((stamp ns, RGB)
    pairs) reliably on its image topic at a camera's pace (the geometry worker keeps up);
    return the SceneStatus Collector."""
    statuses = Collector(client, SceneStatus, f'{ns}/vlm3r_node/status')
    statuses.wait(lambda m: m.model_state == SceneStatus.MODEL_READY, timeout=60)
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    pub = client.create_publisher(Image, f'{ns}/camera/image_raw', reliable)
    assert wait_for(lambda: pub.get_subscription_count() > 0, 10.0)
    for stamp, img in frames:
        pub.publish(rgb_to_image(img, stamp))
        time.sleep(pause_s)
    return statuses


def publish_frames(node: Node, topic: str, count: int, start_ns: int = 1_000_000_000,
                   period_ns: int = 100_000_000, width: int = 64, height: int = 48,
                   pause_s: float = 0.01, expect_subscriber: bool = True,
                   qos: Any = qos_profile_sensor_data) -> None:
    """Publish ``count`` raw rgb8 frames with increasing stamps (sensor-data QoS).

    With ``expect_subscriber`` (default) fail unless someone subscribes to ``topic``.
    """
    pub = node.create_publisher(Image, topic, qos)
    matched = wait_for(lambda: pub.get_subscription_count() > 0,
                       10.0 if expect_subscriber else 0.5)
    assert matched or not expect_subscriber, f'nobody subscribes {topic}'
    # Matching is not symmetric: give the subscriber time to learn about this writer, or
    # the first best-effort samples are dropped on a loaded machine.
    time.sleep(0.3)
    for i in range(count):
        pub.publish(rgb_to_image(synthetic_frame(i, width, height), start_ns + i * period_ns))
        time.sleep(pause_s)
    node.destroy_publisher(pub)


def rss_mb() -> float:
    """Return this process's resident set size in MiB (the node runs in-process)."""
    with open('/proc/self/status', encoding='ascii') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError('VmRSS not found')


__all__ = ['rss_mb', 'Collector', 'call', 'client_node', 'ensure_rclpy', 'ns_to_stamp',
           'publish_frames', 'running_node', 'synthetic_frame', 'wait_for']
