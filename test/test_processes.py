"""The node and the CLIs as separate processes, started through their entry points."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.qos import QoSProfile, ReliabilityPolicy

from ros_support import Collector, call, client_node, publish_frames, wait_for
from test_node_lifecycle import CALL_TIMEOUT_S, LOST, SHUTTING_DOWN, Caller
from vlm3r_ros.msg import SceneStatus
from vlm3r_ros.pipeline.errors import ErrorCode

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]


def start_node(ns: str, *params: str) -> subprocess.Popen:
    args = [sys.executable, '-m', 'vlm3r_ros.node.vlm3r_node', '--ros-args',
            '--params-file', str(ROOT / 'config' / 'vlm3r.yaml'), '-r', f'__ns:={ns}',
            '-p', f'image_topic:={ns}/camera/image_raw', '-p', 'status_period_s:=0.2']
    for p in params:
        args += ['-p', p]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop(proc: subprocess.Popen, sig: int) -> tuple[float, str]:
    started = time.monotonic()
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=10)
    return time.monotonic() - started, out


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_node_process_serves_cli_and_shuts_down_fast(sig):
    ns = f'/proc{os.getpid()}_{int(sig)}'
    # Reliable on both sides: an exact frame count across processes on a loaded machine.
    proc = start_node(ns, 'model_profile:=none', 'qos_reliability:=reliable')
    try:
        with client_node() as client:
            statuses = Collector(client, SceneStatus, f'{ns}/vlm3r_node/status')
            statuses.wait(timeout=20)
            reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
            # Cross-process discovery on a loaded machine can miss a first burst entirely;
            # what matters here is that frames flow, so resend (new stamps) a few times.
            for attempt in range(3):
                publish_frames(client, f'{ns}/camera/image_raw', 5, qos=reliable,
                               start_ns=(attempt + 1) * 10_000_000_000)
                if wait_for(lambda: any(m.frames_received >= 5
                                        for m in list(statuses.messages)), 10.0):
                    break
            statuses.wait(lambda m: m.frames_received >= 5)
        cli = subprocess.run(
            [sys.executable, '-m', 'vlm3r_ros.tools.ask', 'How many chairs?', '--json',
             '--node', f'{ns}/vlm3r_node', '--timeout', '20'],
            capture_output=True, text=True, timeout=60)
        assert cli.returncode == 1, cli.stdout + cli.stderr
        data = json.loads(cli.stdout)
        assert data['error_name'] == 'MODEL_NOT_READY' and data['value'] is None
        plan = subprocess.run(
            [sys.executable, '-m', 'vlm3r_ros.tools.plan', 'the fridge',
             '--node', f'{ns}/vlm3r_node', '--timeout', '20'],
            capture_output=True, text=True, timeout=60)
        assert plan.returncode == 1 and 'MODEL_NOT_READY' in plan.stdout
    finally:
        elapsed, out = stop(proc, sig)
    assert proc.returncode == 0, out
    assert elapsed < 2.0, f'shutdown took {elapsed:.2f} s'
    assert 'shutting down' in out


def test_cli_reports_missing_node():
    cli = subprocess.run([sys.executable, '-m', 'vlm3r_ros.tools.ask', 'q', '--node',
                          '/nobody_here', '--timeout', '1'],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2 and 'not available' in cli.stdout


def wait_model_ready(client, ns: str) -> Collector:
    """Publish frames (reliable, resent if discovery missed them) until a keyframe exists."""
    statuses = Collector(client, SceneStatus, f'{ns}/vlm3r_node/status')
    statuses.wait(lambda m: m.model_state == SceneStatus.MODEL_READY, timeout=90)
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    for attempt in range(3):
        publish_frames(client, f'{ns}/camera/image_raw', 6, qos=reliable, pause_s=0.05,
                       start_ns=(attempt + 1) * 10_000_000_000)
        if wait_for(lambda: any(m.keyframe_count > 0 for m in list(statuses.messages)), 15):
            break
    statuses.wait(lambda m: m.keyframe_count > 0)
    return statuses


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_signal_with_calls_in_flight_answers_every_call(sig):
    ns = f'/sig{os.getpid()}_{int(sig)}'
    proc = start_node(ns, 'model_profile:=tiny', 'qos_reliability:=reliable',
                      'geometry_rate_hz:=100.0', 'max_new_tokens:=64')
    try:
        with client_node() as client:
            statuses = wait_model_ready(client, ns)
            stop_calls = threading.Event()
            callers = [Caller(client, f'{ns}/vlm3r_node/spatial_query', stop_calls)
                       for _ in range(8)]
            assert all(c.cli.wait_for_service(timeout_sec=10) for c in callers)
            for caller in callers:
                caller.start()
            assert wait_for(lambda: any(m.queued_requests >= 2
                                        for m in list(statuses.messages)), 20)
            elapsed, out = stop(proc, sig)
            stop_calls.set()
            for caller in callers:
                caller.join(CALL_TIMEOUT_S + 5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    codes = Counter(code for c in callers for code in c.codes)
    assert codes[LOST] == 0, f'{codes[LOST]} calls got no response: {codes}\n{out}'
    assert set(codes) <= {ErrorCode.OK, ErrorCode.BUSY, SHUTTING_DOWN}, codes
    assert codes[SHUTTING_DOWN] >= 1, codes
    assert proc.returncode == 0 and 'Traceback' not in out, out
    assert elapsed < 8.0, f'shutdown took {elapsed:.2f} s'


def test_shutdown_transition_ends_the_process():
    ns = f'/fin{os.getpid()}'
    proc = start_node(ns, 'model_profile:=none')
    try:
        with client_node() as client:
            Collector(client, SceneStatus, f'{ns}/vlm3r_node/status').wait(timeout=20)
            res = call(client, ChangeState, f'{ns}/vlm3r_node/change_state',
                       ChangeState.Request(transition=Transition(
                           id=Transition.TRANSITION_ACTIVE_SHUTDOWN)))
            assert res.success
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
            pytest.fail('the process stayed alive after the shutdown transition')
    assert proc.returncode == 0 and 'shutdown transition' in out, out


CRASHING_NODE = '''
import sys
from vlm3r_ros.node import vlm3r_node

def crash(self):
    raise RuntimeError('status publishing broke')

vlm3r_node.Vlm3rNode._publish_status = crash  # an exception escapes a timer callback
vlm3r_node.main(sys.argv[1:])
'''


def test_crash_never_exits_zero():
    ns = f'/crash{os.getpid()}'
    proc = subprocess.run(
        [sys.executable, '-c', CRASHING_NODE, '--ros-args', '-r', f'__ns:={ns}',
         '-p', 'model_profile:=none', '-p', 'status_period_s:=0.2'],
        capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert 'status publishing broke' in out, out
