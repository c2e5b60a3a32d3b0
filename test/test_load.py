"""Load: a 30 Hz 640x480 rgb8 stream over DDS while 8 clients keep asking questions.

Bounded in time (LOAD_SECONDS) and loopback only. Asserts functional properties: every
call is answered (OK, or BUSY when the queue is full), nothing times out or is lost, at
least one answer is OK, more than 80% of published frames are received, memory growth is
bounded, and the node still answers afterwards (no deadlock). Speeds are measured, not
asserted: the table is printed (``pytest -s``) and written to ``out/load_test.json``.
"""
from __future__ import annotations

import json
import os
import platform
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from ros_support import (Collector, client_node, publish_frames, rss_mb, running_node,
                         synthetic_frame, wait_for)
from vlm3r_ros.msg import SceneStatus
from vlm3r_ros.node.ros_convert import ns_to_stamp, rgb_to_image
from vlm3r_ros.pipeline.errors import ErrorCode
from vlm3r_ros.srv import SpatialQuery

pytestmark = pytest.mark.ros
LOAD_SECONDS = float(os.environ.get('VLM3R_LOAD_SECONDS', '8'))
RATE_HZ, WIDTH, HEIGHT, CLIENTS = 30.0, 640, 480, 8
# A call without a response by then counts as lost.
CALL_TIMEOUT_S = float(os.environ.get('VLM3R_CALL_TIMEOUT_S', '30'))
OUT = Path(__file__).resolve().parents[1] / 'out' / 'load_test.json'
QUESTIONS = (
    dict(question='How many chairs are in this room?'),
    dict(question='Which object is closest to the door?', options=['the sofa', 'the tv',
                                                                   'the lamp', 'the bed']),
    dict(question='What is the length of the longest side of the table (in meters)?',
         keyframe_budget=8),
    dict(question='What is the colour of the sofa?', answer_type='text'),
)


def percentile(values: list[float], q: float) -> float:
    """Return the q-th percentile (NaN for no values)."""
    return float(np.percentile(values, q)) if values else float('nan')


class Stream(threading.Thread):
    """Publish pre-built 640x480 rgb8 frames at a fixed rate for a fixed time."""

    def __init__(self, client: Any, topic: str, seconds: float) -> None:
        super().__init__(name='load-stream', daemon=True)
        self.pub = client.create_publisher(Image, topic, qos_profile_sensor_data)
        self.frames = [rgb_to_image(synthetic_frame(i, WIDTH, HEIGHT), 0) for i in range(30)]
        self.seconds, self.published = seconds, 0
        self.t0 = self.t1 = 0.0

    def run(self) -> None:
        self.t0 = time.monotonic()
        n_total = int(self.seconds * RATE_HZ)
        for n in range(n_total):
            delay = self.t0 + n / RATE_HZ - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            msg = self.frames[n % len(self.frames)]
            msg.header.stamp = ns_to_stamp(1_000_000_000 + int(n * 1e9 / RATE_HZ))
            self.pub.publish(msg)
            self.published += 1
        self.t1 = time.monotonic()


class Asker(threading.Thread):
    """One client: ask, wait for the response, ask again, until told to stop."""

    def __init__(self, client: Any, service: str, index: int, stop: threading.Event,
                 backoff_s: float = 0.02, qos: Any = None) -> None:
        super().__init__(name=f'load-client-{index}', daemon=True)
        self.cli = client.create_client(SpatialQuery, service,
                                        **({'qos_profile': qos} if qos else {}))
        self.index, self.stop, self.backoff_s = index, stop, backoff_s
        self.results: list[tuple[float, int]] = []  # (latency s, error code); -1: lost

    def run(self) -> None:
        i = self.index
        while not self.stop.is_set():
            fields = QUESTIONS[i % len(QUESTIONS)]
            i += 1
            done = threading.Event()
            started = time.monotonic()
            future = self.cli.call_async(SpatialQuery.Request(**fields))
            future.add_done_callback(lambda _f: done.set())
            if not done.wait(CALL_TIMEOUT_S):
                self.results.append((CALL_TIMEOUT_S, -1))
                continue
            self.results.append((time.monotonic() - started, int(future.result().error_code)))
            if future.result().error_code == ErrorCode.BUSY:
                time.sleep(self.backoff_s)  # a client told BUSY backs off, as real ones do


def test_stream_and_concurrent_questions():
    with running_node(model_profile='tiny') as (node, ns), client_node() as client:
        statuses = Collector(client, SceneStatus, f'{ns}/vlm3r_node/status')
        statuses.wait(lambda m: m.model_state == SceneStatus.MODEL_READY, timeout=60)
        service = f'{ns}/vlm3r_node/spatial_query'
        stop = threading.Event()
        askers = [Asker(client, service, i, stop) for i in range(CLIENTS)]
        assert all(a.cli.wait_for_service(timeout_sec=10) for a in askers)
        stream = Stream(client, f'{ns}/camera/image_raw', LOAD_SECONDS)
        assert wait_for(lambda: stream.pub.get_subscription_count() > 0, 10)
        time.sleep(0.3)  # let the subscriber match this writer before best-effort samples

        rss: list[tuple[float, float]] = []
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                rss.append((time.monotonic(), rss_mb()))
                sampling.wait(0.25)

        rss_base = rss_mb()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        first_status = len(statuses.messages)
        stream.start()
        # Questions start once the first keyframe exists, so NO_FRAMES is not a valid reply.
        statuses.wait(lambda m: m.keyframe_count > 0, timeout=30)
        for asker in askers:
            asker.start()
        stream.join(LOAD_SECONDS + 30)
        assert not stream.is_alive()
        during = statuses.messages[first_status:]
        stop.set()
        for asker in askers:
            asker.join(CALL_TIMEOUT_S + 5)
        assert not any(a.is_alive() for a in askers), 'a client is stuck (deadlock?)'
        # Let in-flight frames land; the newest status (period 0.2 s) then has the counts.
        time.sleep(0.6)
        final = statuses.messages[-1]
        sampling.set()
        sampler.join()
        # No deadlock: the node still answers a plain question after the load.
        after = client.create_client(SpatialQuery, service)
        future = after.call_async(SpatialQuery.Request(question='How many chairs?'))
        assert wait_for(future.done, CALL_TIMEOUT_S), 'no answer after the load'
        assert future.result().error_code == ErrorCode.OK, future.result().message
        rss_end = rss_mb()

    results = [r for a in askers for r in a.results]
    codes = Counter(code for _, code in results)
    ok_lat = [lat for lat, code in results if code == ErrorCode.OK]
    all_lat = [lat for lat, code in results if code >= 0]
    received = final.frames_received + final.frames_rejected
    rss_values = [v for _, v in rss]
    report = {
        'device': f'{platform.machine()} CPU, {os.cpu_count()} cores, tiny model, Fast DDS '
                  'loopback, node and clients in one process',
        'stream': {'rate_hz': RATE_HZ, 'width': WIDTH, 'height': HEIGHT, 'encoding': 'rgb8',
                   'seconds': round(stream.t1 - stream.t0, 2)},
        'frames_published': stream.published,
        'frames_received': int(final.frames_received),
        'frames_rejected': int(final.frames_rejected),
        'ingest_drop_rate': round(1.0 - received / stream.published, 4),
        'frames_dropped_in_node': int(final.frames_dropped),
        'geometry_rate_hz_median': round(float(np.median([m.geometry_rate_hz for m in during])),
                                         2),
        'ingest_rate_hz_median': round(float(np.median([m.ingest_rate_hz for m in during])), 2),
        'buffer_length': int(final.buffer_length),
        'buffer_mb': round(final.buffer_bytes / 2**20, 1),
        'clients': CLIENTS,
        'calls': len(results),
        'codes': {ErrorCode(c).name if c >= 0 else 'LOST': n for c, n in sorted(codes.items())},
        'latency_ok_s': {'p50': round(percentile(ok_lat, 50), 4),
                         'p95': round(percentile(ok_lat, 95), 4),
                         'max': round(max(ok_lat, default=float('nan')), 4)},
        'latency_all_s': {'p50': round(percentile(all_lat, 50), 4),
                          'p95': round(percentile(all_lat, 95), 4)},
        'rss_mb': {'before': round(rss_base, 1), 'peak': round(max(rss_values), 1),
                   'after': round(rss_end, 1)},
        'rss_series': [(round(t - rss[0][0], 2), round(v, 1)) for t, v in rss],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + '\n')
    rows = [
        ('stream', f'{RATE_HZ:g} Hz {WIDTH}x{HEIGHT} rgb8 for {report["stream"]["seconds"]} s'),
        ('frames published / received', f'{stream.published} / {received}'),
        ('ingest drop rate', f'{report["ingest_drop_rate"]:.2%}'),
        ('dropped in node (duplicates + geometry skipped)', str(report['frames_dropped_in_node'])),
        ('ingest / geometry rate (Hz, median)',
         f'{report["ingest_rate_hz_median"]:.1f} / {report["geometry_rate_hz_median"]:.1f}'),
        ('clients / calls', f'{CLIENTS} / {len(results)}'),
        ('codes', ', '.join(f'{k} {v}' for k, v in report['codes'].items())),
        ('latency OK p50 / p95 / max (s)', '{p50:.3f} / {p95:.3f} / {max:.3f}'.format(
            **report['latency_ok_s'])),
        ('latency all p50 / p95 (s)', '{p50:.3f} / {p95:.3f}'.format(**report['latency_all_s'])),
        ('RSS before / peak / after (MiB)', '{before:.0f} / {peak:.0f} / {after:.0f}'.format(
            **report['rss_mb'])),
    ]
    width = max(len(k) for k, _ in rows)
    print('\nload test (' + report['device'] + ')')
    for key, value in rows:
        print(f'  {key:<{width}}  {value}')
    print(f'  written to {OUT}')

    assert codes[-1] == 0, f'{codes[-1]} calls got no response within {CALL_TIMEOUT_S} s'
    assert set(codes) <= {ErrorCode.OK, ErrorCode.BUSY}, report['codes']
    assert codes[ErrorCode.OK] >= 1
    assert received > 0.8 * stream.published, report
    assert max(rss_values) - rss_base < 500.0, report['rss_mb']


BURST_CLIENTS, BURST_SECONDS = 24, 4.0
# A client's response history must hold the responses that arrive before its executor takes
# them: with the rclpy default (depth 10) about 1 in 90 responses was lost at 24 clients in
# one process, whatever the node did. Same profile as vlm3r_ros.node.services.SERVICE_QOS.
CLIENT_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)


def test_many_clients_every_call_answered():
    """24 clients calling back to back (no back-off on BUSY): no call goes unanswered.

    The rclpy default service queue (depth 10) dropped requests when more arrived than the
    executor took at once; every call must get OK or BUSY instead (clients use a deep
    response history too, see CLIENT_QOS).
    """
    with running_node(model_profile='tiny', geometry_rate_hz=100.0) as (_node, ns), \
            client_node() as client:
        statuses = Collector(client, SceneStatus, f'{ns}/vlm3r_node/status')
        statuses.wait(lambda m: m.model_state == SceneStatus.MODEL_READY, timeout=60)
        publish_frames(client, f'{ns}/camera/image_raw', 6, pause_s=0.05)
        statuses.wait(lambda m: m.keyframe_count > 0, timeout=30)
        service = f'{ns}/vlm3r_node/spatial_query'
        stop = threading.Event()
        askers = [Asker(client, service, i, stop, backoff_s=0.0, qos=CLIENT_QOS)
                  for i in range(BURST_CLIENTS)]
        assert all(a.cli.wait_for_service(timeout_sec=10) for a in askers)
        for asker in askers:
            asker.start()
        time.sleep(BURST_SECONDS)
        stop.set()
        for asker in askers:
            asker.join(CALL_TIMEOUT_S + 5)
    codes = Counter(code for a in askers for _, code in a.results)
    print(f'\n{BURST_CLIENTS} clients, {BURST_SECONDS:g} s: ' + ', '.join(
        f'{ErrorCode(c).name if c >= 0 else "LOST"} {n}' for c, n in sorted(codes.items())))
    lost_at = [i for a in askers for i, (_, code) in enumerate(a.results) if code < 0]
    assert codes[-1] == 0, f'{codes[-1]} calls got no response (call index {lost_at}): {codes}'
    assert set(codes) <= {ErrorCode.OK, ErrorCode.BUSY}, codes
    assert codes[ErrorCode.OK] >= 1 and codes[ErrorCode.BUSY] >= 1, codes
