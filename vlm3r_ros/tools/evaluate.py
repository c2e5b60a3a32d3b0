"""vlm3r-eval: score a vlm3r_node on ground-truth questions (official VSI-Bench rules).

    vlm3r-eval DATA_DIR [--node /vlm3r_node] [--launch] [--profile tiny] [--rate 0]
               [--pace auto] [--out DIR] [--tasks T ...] [--limit N] [--param NAME:=VALUE ...]
               [--protocol product|reference] [--parser official|lenient]
               [--benchmark auto|vsibench|vstibench] [--videos DIR] [--stream sampled|all]

DATA_DIR is either a VSI-Bench / VSTI-Bench download in its published layout (question
table and videos; see :mod:`vlm3r_ros.tools.benchmark_eval`) or a bag directory.

A bag directory is what :func:`vlm3r_ros.eval.bags.write_bag` writes: ``bag/`` and
``qa.json``.
The tool replays the bag into the node (paced by the node's status so no frame is lost),
waits until the geometry encoder has caught up, asks every question through the node's
``spatial_query`` service (the item's options and answer type), scores the answers
with :func:`vlm3r_ros.eval.scoring.score_items` and writes ``results.json``,
``results.csv``, ``scores.png`` and ``answers.jsonl`` to ``--out``.

With ``--launch`` it starts its own node as a subprocess (``python -m
vlm3r_ros.node.vlm3r_node``) in a private namespace, with the bag's image topic,
transport, camera_info, depth and pose topics, and stops it cleanly at the end; without
it, it talks to the running node ``--node``, publishing the bag's topics as recorded
(``--remap`` them when the node listens elsewhere).

Exit codes: 0 when every question got a response (error codes included: they are
counted per code and reported), 1 on a setup failure (bad bag, no node, node died),
2 when some questions got no response at all.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from vlm3r_ros.eval.qa import ALL_TASKS, QAItem, load_qa
from vlm3r_ros.eval.scoring import ItemScore, Report, plot_bar_chart, score_items
from vlm3r_ros.pipeline.engine import ModelState
from vlm3r_ros.pipeline.errors import ErrorCode

EXIT_OK, EXIT_SETUP, EXIT_UNANSWERED = 0, 1, 2
NO_RESPONSE = 'NO_RESPONSE'  # client-side: the service never answered
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
# Ingest pacing keeps at most this many frames, and this many bytes, in flight: on one
# machine (Fast DDS shared memory) a best-effort subscriber lost frames of bursts above
# about 0.5 MB (three 320x240 rgb8 frames), and the node's queue holds qos_depth (5).
INGEST_WINDOW, IN_FLIGHT_BYTES = 4, 480_000
POSE_TYPES = {'geometry_msgs/msg/PoseStamped': 'pose_stamped',
              'nav_msgs/msg/Odometry': 'odometry'}


class EvalSetupError(RuntimeError):
    """The evaluation cannot run (bad input, no node, the launched node died)."""


# --------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class BagInfo:
    """A ``write_bag`` output directory: the bag, its QA items and the topics to feed.

    ``image_topic`` is the topic as recorded ('/camera/image_raw' or
    '/camera/image_raw/compressed'); ``image_base`` and ``transport`` are the node's
    ``image_topic`` and ``image_transport`` parameters for it.
    """

    bag_dir: Path
    bag_path: Path
    items: list[QAItem]
    doc: dict[str, Any]
    types: dict[str, str]
    image_topic: str
    image_base: str
    transport: str
    camera_info_topic: str | None
    depth_topic: str | None
    pose_topic: str | None
    pose_type: str | None
    num_frames: int
    duration_s: float


def load_bag_dir(bag_dir: str | Path) -> BagInfo:
    """Return the :class:`BagInfo` of ``bag_dir``.

    Topics come from qa.json's ``bag`` section when present, else from the bag itself.
    Raises EvalSetupError when the bag or qa.json is missing or unreadable, has no
    colour image topic, or holds no question.
    """
    from vlm3r_ros.tools.replay import bag_summary, is_colour_frame
    root = Path(bag_dir)
    qa_path = root / 'qa.json'
    if not qa_path.is_file():
        raise EvalSetupError(f'{qa_path} not found (BAG_DIR must hold bag/ and qa.json)')
    try:
        items, doc = load_qa(qa_path)
    except (ValueError, TypeError, KeyError) as exc:
        raise EvalSetupError(f'cannot read {qa_path}: {exc}') from None
    if not items:
        raise EvalSetupError(f'{qa_path} holds no question')
    meta = doc.get('bag') or {}
    bag_path = root / str(meta.get('path', 'bag'))
    try:
        types, _, duration_ns = bag_summary(bag_path)
    except Exception as exc:  # noqa: BLE001 - rosbags raises several types for a bad bag
        raise EvalSetupError(f'cannot read the bag at {bag_path}: {exc}') from None
    image_topic = meta.get('image_topic') or next(
        (t for t, m in sorted(types.items()) if is_colour_frame(t, m)), None)
    if image_topic not in types or not is_colour_frame(image_topic, types[image_topic]):
        raise EvalSetupError(f'{bag_path} has no colour image topic {image_topic or ""}')
    compressed = types[image_topic] == 'sensor_msgs/msg/CompressedImage'
    if compressed and not image_topic.endswith('/compressed'):
        raise EvalSetupError(f'compressed images must be on <topic>/compressed (the node '
                             f'subscribes there), got {image_topic}')
    base = image_topic[:-len('/compressed')] if compressed else image_topic

    def topic(key: str, wanted: Sequence[str]) -> str | None:
        if meta:
            name = meta.get(key)
        else:  # no description: the first topic of the right type (depth: named so)
            name = next((t for t, m in sorted(types.items()) if m in wanted
                         and (key != 'depth_topic' or 'depth' in t)), None)
        return name if name in types and types[name] in wanted else None

    pose_topic = topic('pose_topic', tuple(POSE_TYPES))
    num_frames = int(meta.get('num_frames') or 0)
    return BagInfo(
        bag_dir=root, bag_path=bag_path, items=items, doc=doc, types=types,
        image_topic=image_topic, image_base=base,
        transport='compressed' if compressed else 'raw',
        camera_info_topic=topic('camera_info_topic', ('sensor_msgs/msg/CameraInfo',)),
        depth_topic=topic('depth_topic', ('sensor_msgs/msg/Image',)),
        pose_topic=pose_topic, pose_type=POSE_TYPES[types[pose_topic]] if pose_topic else None,
        num_frames=num_frames, duration_s=duration_ns / 1e9)


def select_items(items: Sequence[QAItem], tasks: Iterable[str] | None = None,
                 limit: int | None = None) -> list[QAItem]:
    """Return the items of ``tasks`` (all when None), at most ``limit`` per task, in order.

    Raises ValueError for a task name that is not a known benchmark task.
    """
    wanted = None if tasks is None else list(tasks)
    unknown = [t for t in wanted or [] if t not in ALL_TASKS]
    if unknown:
        raise ValueError(f'unknown task(s) {unknown}; known: {", ".join(ALL_TASKS)}')
    taken: Counter[str] = Counter()
    out = []
    for item in items:
        if wanted is not None and item.task not in wanted:
            continue
        if limit is not None and taken[item.task] >= limit:
            continue
        taken[item.task] += 1
        out.append(item)
    return out


# --------------------------------------------------------------------------- the node
def params_file() -> Path | None:
    """Return the package's config/vlm3r.yaml (checkout or installed share), or None."""
    local = PACKAGE_ROOT / 'config' / 'vlm3r.yaml'
    if local.is_file():
        return local
    try:
        from ament_index_python.packages import get_package_share_directory
        shared = Path(get_package_share_directory('vlm3r_ros')) / 'config' / 'vlm3r.yaml'
    except Exception:  # noqa: BLE001 - not installed with colcon: defaults apply
        return None
    return shared if shared.is_file() else None


def node_parameters(info: BagInfo, profile: str, namespace: str = '',
                    overrides: dict[str, str] | None = None,
                    protocol: str = 'product') -> dict[str, str]:
    """Return the ``-p`` parameters (as text) for a node fed with ``info``'s bag.

    Topics are prefixed with ``namespace`` (the replay remaps them the same way). Besides
    topics and profile: voxels from depth when the bag has depth, camera_info and poses;
    reliable QoS and a short status period (the replay paces on the
    status), an uncapped geometry rate (pacing decides the rate, so every frame gets
    geometry) and a buffer that holds the whole bag. ``overrides`` win.
    """
    ns = namespace.rstrip('/')
    params = {
        'model_profile': profile,
        'protocol': protocol,
        'image_topic': ns + info.image_base,
        'image_transport': info.transport,
        'qos_reliability': 'reliable',
        'status_period_s': '0.1',
        'geometry_rate_hz': '120.0',
        'buffer_max_frames': str(min(100000, max(256, info.num_frames + 16))),
        'buffer_max_span_s': f'{min(86400.0, max(120.0, info.duration_s + 10.0)):.1f}',
    }
    if info.camera_info_topic:
        params['camera_info_topic'] = ns + info.camera_info_topic
    if info.depth_topic:
        params['depth_topic'] = ns + info.depth_topic
    if info.pose_topic:
        params['pose_topic'] = ns + info.pose_topic
        params['pose_topic_type'] = str(info.pose_type)
    if info.depth_topic and info.camera_info_topic and info.pose_topic:
        # An RGB-D robot with odometry: voxels (keyframe coverage) from measured depth.
        params['points_source'] = 'depth'
    params.update(overrides or {})
    return params


def parse_params(items: Sequence[str]) -> dict[str, str]:
    """Return {name: value} from 'NAME:=VALUE' items; raises ValueError on a bad one."""
    out = {}
    for item in items:
        name, sep, value = item.partition(':=')
        if not sep or not name:
            raise ValueError(f'parameter must look like NAME:=VALUE, got {item!r}')
        out[name] = value
    return out


class LaunchedNode:
    """A vlm3r_node subprocess started through its module entry point, output to a log."""

    def __init__(self, params: dict[str, str], namespace: str, log_path: Path) -> None:
        """Remember what to start; :meth:`start` starts it."""
        self.params, self.namespace, self.log_path = params, namespace, log_path
        self.proc: subprocess.Popen | None = None
        self._log: Any = None

    def command(self) -> list[str]:
        """Return the command line (the node's ``--ros-args`` included)."""
        cmd = [sys.executable, '-m', 'vlm3r_ros.node.vlm3r_node', '--ros-args']
        config = params_file()
        if config is not None:
            cmd += ['--params-file', str(config)]
        if self.namespace:
            cmd += ['-r', f'__ns:={self.namespace}']
        for name, value in self.params.items():
            cmd += ['-p', f'{name}:={value}']
        return cmd

    def start(self) -> None:
        """Start the process (the package importable from this checkout)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open('w', encoding='utf8')
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(
            p for p in (str(PACKAGE_ROOT), env.get('PYTHONPATH', '')) if p)
        env.setdefault('PYTHONUNBUFFERED', '1')
        self.proc = subprocess.Popen(self.command(), stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env)

    def alive(self) -> bool:
        """Return True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Stop with SIGINT (then SIGTERM, then SIGKILL); return the exit code."""
        proc = self.proc
        if proc is None:
            return None
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if proc.poll() is not None:
                break
            proc.send_signal(sig)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                continue
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        """Return the last ``lines`` lines of the node's output."""
        try:
            text = self.log_path.read_text(encoding='utf8', errors='replace')
        except OSError:
            return ''
        return '\n'.join(text.splitlines()[-lines:])


@dataclass
class Answer:
    """One question's outcome. ``error_code`` is None when no response came at all."""

    item: QAItem
    error_code: int | None
    message: str = ''
    answer: str = ''
    value: float = math.nan
    option_index: int = -1
    keyframes: int = 0
    coverage: float = 0.0
    elapsed_s: float = 0.0

    @property
    def error_name(self) -> str:
        """Return the error code's name ('OK', 'MODEL_NOT_READY', ...) or NO_RESPONSE."""
        if self.error_code is None:
            return NO_RESPONSE
        try:
            return ErrorCode(self.error_code).name
        except ValueError:
            return f'CODE_{self.error_code}'

    @property
    def prediction(self) -> str | None:
        """Return the answer text to score, or None (scored 0) when there was no answer."""
        return self.answer if self.error_code == ErrorCode.OK else None

    def to_json(self, score: ItemScore | None = None) -> dict[str, Any]:
        """Return one answers.jsonl record: question, answer, ground truth, error code."""
        item = self.item
        return {
            'id': item.id, 'task': item.task, 'benchmark': item.benchmark,
            'question': item.question, 'options': item.options,
            'answer_type': item.answer_type, 'answer': self.answer,
            'value': self.value if math.isfinite(self.value) else None,
            'option_index': self.option_index, 'ground_truth': item.answer,
            'ground_truth_text': item.answer_text,
            'parsed': score.parsed if score else '', 'score': score.score if score else 0.0,
            'error_code': self.error_code, 'error_name': self.error_name,
            'message': self.message, 'keyframes': self.keyframes,
            'coverage': self.coverage, 'elapsed_s': round(self.elapsed_s, 4)}


@dataclass
class ReplayStats:
    """What the replay did: messages and frames published, pacing mode, timeouts and
    frames lost on the way (never counted by the node), frames the node took (received
    and with geometry) and the seconds it all took."""

    messages: int = 0
    frames: int = 0
    pace: str = 'none'
    pace_timeouts: int = 0
    lost: int = 0
    frames_received: int = 0
    geometry_frames: int | None = None
    settled: bool = False
    replay_s: float = 0.0
    settle_s: float = 0.0


class NodeSession:
    """A ROS client of one vlm3r_node (optionally launched here) for replay and questions.

    Use as a context manager: entering starts rclpy in a private context, launches the
    node when ``launch_params`` is given, and waits until the node's services and status
    are up and its model has finished loading; leaving stops everything.
    """

    def __init__(self, node_name: str = '/vlm3r_node', *,
                 launch_params: dict[str, str] | None = None, namespace: str = '',
                 log_path: Path | None = None, ready_timeout_s: float = 120.0,
                 log: Callable[[str], None] = print) -> None:
        """Configure the session; nothing starts before ``__enter__``."""
        self.launched = None
        if launch_params is not None:
            self.launched = LaunchedNode(launch_params, namespace,
                                         log_path or Path('vlm3r_node.log'))
            node_name = f'{namespace.rstrip("/")}/vlm3r_node'
        self.node_name = '/' + node_name.strip('/')
        self.namespace = namespace
        self.ready_timeout_s = ready_timeout_s
        self.log = log
        self.node_exit_code: int | None = None
        self._context: Any = None
        self._executor: Any = None
        self._thread: threading.Thread | None = None
        self.node: Any = None
        self.monitor: Any = None
        self._query: Any = None
        self._plan: Any = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> 'NodeSession':
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        from vlm3r_ros.node.services import SERVICE_QOS
        from vlm3r_ros.srv import PlanRoute, SpatialQuery
        from vlm3r_ros.tools.replay import NodeMonitor
        try:
            if self.launched is not None:
                self.launched.start()
                self.log(f'launched {self.node_name} (log: {self.launched.log_path})')
            self._context = rclpy.Context()
            rclpy.init(args=[], context=self._context)  # argv FROM:=TO are not remaps
            self.node = rclpy.create_node(f'vlm3r_eval_{os.getpid()}', context=self._context)
            self._executor = SingleThreadedExecutor(context=self._context)
            self._executor.add_node(self.node)
            self._thread = threading.Thread(target=self._executor.spin, daemon=True)
            self._thread.start()
            self.monitor = NodeMonitor(self.node, self.node_name)
            # Deep client queues: with rclpy's default depth 10 responses can be lost.
            self._query = self.node.create_client(SpatialQuery, f'{self.node_name}/spatial_query',
                                                  qos_profile=SERVICE_QOS)
            self._plan = self.node.create_client(PlanRoute, f'{self.node_name}/plan_route',
                                                 qos_profile=SERVICE_QOS)
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._executor is not None:
            # Join the spinner before destroying what it waits on: a thread still inside
            # rcl's wait when the interpreter exits aborts the process.
            self._executor.shutdown(timeout_sec=1.0)
            if self._thread is not None:
                self._thread.join(2.0)
            self._executor = None
        if self.node is not None:
            self.node.destroy_node()
            self.node = None
        if self._context is not None:
            self._context.try_shutdown()
            self._context = None
        if self.launched is not None and self.launched.proc is not None:
            self.node_exit_code = self.launched.stop()

    def _check_alive(self) -> None:
        if self.launched is not None and not self.launched.alive():
            raise EvalSetupError(
                f'the launched node exited with code {self.launched.proc.returncode}:\n'
                f'{self.launched.log_tail()}')

    def _wait(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if predicate():
                return True
            self._check_alive()
            time.sleep(0.05)
        return predicate()

    def _wait_ready(self) -> None:
        """Wait for the services, a status, and a model that is no longer loading."""
        timeout = self.ready_timeout_s
        if not self._wait(self._query.service_is_ready, timeout):
            raise EvalSetupError(f'service {self.node_name}/spatial_query is not available '
                                 f'after {timeout:g} s (is the node running and active, in '
                                 'this ROS_DOMAIN_ID?)')
        if not self._wait(lambda: self.monitor.status is not None, timeout):
            raise EvalSetupError(f'no status on {self.node_name}/status after {timeout:g} s')
        loading = (ModelState.LOADING, ModelState.UNLOADED)  # UNLOADED: activate reloads
        if not self._wait(lambda: self.monitor.status.model_state not in loading, timeout):
            self.log(f'warning: the model is still loading after {timeout:g} s')
        status = self.monitor.status
        state = self.model_state
        detail = f' ({status.last_error})' if state == 'ERROR' and status.last_error else ''
        self.log(f'node {self.node_name}: model {status.model_profile or "-"} {state}{detail}')

    @property
    def model_state(self) -> str:
        """Return the node's model state name from its latest status."""
        status = self.monitor.status
        if status is None:
            return '?'
        try:
            return ModelState(int(status.model_state)).name  # values equal SceneStatus's
        except ValueError:
            return str(status.model_state)

    # ------------------------------------------------------------------ replay
    def choose_pace(self, pace: str = 'auto') -> str:
        """Return the pacing mode for ``pace`` 'auto' (other values are returned as given).

        Geometry pacing sends one frame per status update, so every frame gets geometry
        (deterministic results) but the node's status period bounds the speed: 'auto'
        picks it when the model is ready and statuses come at least every 0.25 s (a
        launched node publishes every 0.1 s), and ingest pacing otherwise.
        """
        if pace != 'auto':
            return pace
        if self.model_state != 'READY':
            return 'ingest'
        self.monitor.wait(lambda m: m.period_s is not None, 5.0)
        period = self.monitor.period_s
        if period is not None and period <= 0.25:
            return 'geometry'
        self.log(f'note: {self.node_name} publishes its status every {period or 0:.2f} s, '
                 'so the replay paces on ingest; the geometry encoder may skip frames '
                 '(--pace geometry gives every frame geometry, one frame per status)')
        return 'ingest'

    def replay(self, info: BagInfo, rate: float = 0.0, remaps: dict[str, str] | None = None,
               pace: str = 'auto', settle_timeout_s: float = 120.0) -> ReplayStats:
        """Replay ``info``'s bag into the node, paced, then wait until geometry settles.

        ``pace``: 'geometry' (each frame waits until the encoder processed the previous
        one), 'ingest' (a few frames in flight, counted as received), 'none', or 'auto'
        (:meth:`choose_pace`). Topics are remapped into the session's namespace, then by
        ``remaps``. Raises EvalSetupError when a launched node dies.
        """
        from vlm3r_ros.tools.replay import Replayer, StatusPacer, colour_frame_bytes
        ns = self.namespace.rstrip('/')
        mapping = {t: ns + t for t in info.types} if ns else {}
        mapping.update(remaps or {})
        pace = self.choose_pace(pace)
        pacer = None
        if pace != 'none':
            # Geometry: one frame at a time, so the encoder never skips one. Ingest: a few
            # frames in flight, within what a best-effort subscription takes without loss.
            window = 1 if pace == 'geometry' else max(1, min(
                INGEST_WINDOW, IN_FLIGHT_BYTES // max(1, colour_frame_bytes(info.bag_path))))
            pacer = StatusPacer(self.monitor, pace, window=window, timeout_s=30.0)
            if not pacer.start(10.0):
                self.log(f'warning: {self.node_name} reports no {pace} counter; '
                         'replaying unpaced')
        ingest0 = self.monitor.ingested() or 0
        geometry0 = self.monitor.geometry_frames
        player = Replayer(self.node, info.bag_path, rate=rate, remaps=mapping,
                          wait_ingested=pacer)
        if not player.wait_for_subscribers(10.0, [info.image_topic]):
            self.log(f'warning: nothing subscribes to {player.output_topic(info.image_topic)};'
                     ' publishing anyway')
        others = [t for t in (info.camera_info_topic, info.depth_topic, info.pose_topic) if t]
        unheard = [player.output_topic(t) for t in others
                   if not player.wait_for_subscribers(1.0, [t], grace_s=0.0)]
        if unheard:
            self.log(f'note: nothing subscribes to {", ".join(unheard)} (published anyway)')
        started = time.monotonic()
        player.play()
        stats = ReplayStats(messages=player.published, frames=player.frames, pace=pace,
                            pace_timeouts=pacer.timeouts if pacer else 0,
                            lost=pacer.lost if pacer else 0,
                            replay_s=time.monotonic() - started)
        started = time.monotonic()
        stats.settled = self.settle(ingest0 + player.frames - stats.lost, geometry0,
                                    player.frames, settle_timeout_s)
        stats.settle_s = time.monotonic() - started
        stats.frames_received = (self.monitor.ingested() or 0) - ingest0
        if self.monitor.geometry_frames is not None:
            stats.geometry_frames = self.monitor.geometry_frames - (geometry0 or 0)
        return stats

    def settle(self, ingest_target: int, geometry0: int | None, frames: int,
               timeout_s: float = 120.0, quiet_s: float = 3.0) -> bool:
        """Wait until the node took every frame and its geometry stopped changing.

        Done when the node counted ``ingest_target`` frames (received + rejected) and,
        with a ready model, processed all ``frames`` since ``geometry0``, and its counters
        then held for about two status periods; or when nothing changed for ``quiet_s``
        (at least three status periods): frames lost on the way never arrive and frames
        skipped by the encoder's latest-frame-wins queue never get geometry. Returns
        False on timeout.
        """
        monitor = self.monitor
        quiet_s = max(quiet_s, 3.0 * (monitor.period_s or 0.0))
        end = time.monotonic() + timeout_s
        last: tuple[Any, ...] | None = None
        changed, stable = time.monotonic(), 0
        while time.monotonic() < end:
            status = monitor.status
            ingested = monitor.ingested() or 0
            key = (ingested, monitor.geometry_frames, status.keyframe_count,
                   status.voxels_observed, status.buffer_length)
            if key != last:
                last, changed, stable = key, time.monotonic(), 0
            else:
                stable += 1
            arrived = ingested >= ingest_target
            if arrived and self.model_state != 'READY':
                return True
            processed = (monitor.geometry_frames or 0) - (geometry0 or 0)
            if arrived and processed >= frames and stable >= 4:  # status + diagnostics x2
                return True
            if time.monotonic() - changed >= quiet_s:
                return True
            seen = monitor.updates
            monitor.wait(lambda m: m.updates > seen, 1.0)
            self._check_alive()
        return False

    # ------------------------------------------------------------------ services
    def _call(self, client: Any, request: Any, timeout_s: float) -> Any | None:
        """Return the service response, or None when none came within ``timeout_s``."""
        future = client.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout_s):
            future.cancel()
            return None
        return future.result()

    def ask(self, item: QAItem, budget: int = 0, timeout_s: float = 120.0,
            window_ns: tuple[int, int] | None = None) -> Answer:
        """Ask one question through the SpatialQuery service; return its :class:`Answer`.

        ``window_ns`` (start, end) limits the keyframes to frames stamped in it.
        """
        from vlm3r_ros.node.ros_convert import ns_to_stamp
        from vlm3r_ros.srv import SpatialQuery
        request = SpatialQuery.Request(question=item.question, options=list(item.options),
                                       answer_type=item.answer_type, keyframe_budget=budget)
        if window_ns is not None:
            request.window_start = ns_to_stamp(window_ns[0])
            request.window_end = ns_to_stamp(window_ns[1])
        started = time.monotonic()
        response = self._call(self._query, request, timeout_s)
        if response is None:
            return Answer(item, None, f'no response within {timeout_s:g} s',
                          elapsed_s=time.monotonic() - started)
        return Answer(item, int(response.error_code), response.message, response.answer,
                      float(response.value), int(response.option_index),
                      len(response.keyframe_stamps), float(response.coverage),
                      float(response.elapsed_s))

    def plan_route(self, goal: str, start: str = '', timeout_s: float = 120.0) -> Any | None:
        """Call the PlanRoute service; return its response, or None when none came."""
        from vlm3r_ros.srv import PlanRoute
        if not self._plan.wait_for_service(timeout_sec=10.0):
            return None
        return self._call(self._plan, PlanRoute.Request(goal=goal, start=start), timeout_s)


# --------------------------------------------------------------------------- results
@dataclass
class EvalResult:
    """Everything one evaluation produced."""

    report: Report
    answers: list[Answer]
    errors: dict[str, int]
    replay: ReplayStats
    run: dict[str, Any] = field(default_factory=dict)

    @property
    def unanswered(self) -> int:
        """Return how many questions got no response at all."""
        return self.errors.get(NO_RESPONSE, 0)


def error_counts(answers: Sequence[Answer]) -> dict[str, int]:
    """Return {error name: count} over ``answers`` (OK included), most frequent first."""
    return dict(Counter(a.error_name for a in answers).most_common())


def ask_all(session: NodeSession, items: Sequence[QAItem], budget: int = 0,
            timeout_s: float = 120.0,
            on_answer: Callable[[int, Answer], None] | None = None) -> list[Answer]:
    """Ask every item in order; ``on_answer(i, answer)`` sees each as it arrives."""
    answers = []
    for i, item in enumerate(items):
        answer = session.ask(item, budget, timeout_s)
        answers.append(answer)
        if on_answer is not None:
            on_answer(i, answer)
    return answers


def score_answers(answers: Sequence[Answer], parser: str = 'official') -> Report:
    """Return the :class:`Report` of ``answers`` (errors score 0, as missing), parsed with
    the official evaluators' rule unless ``parser`` is 'lenient'."""
    return score_items([a.item for a in answers], {a.item.id: a.prediction for a in answers},
                       parser=parser)


def evaluate(session: NodeSession, info: BagInfo, items: Sequence[QAItem], *,
             rate: float = 0.0, budget: int = 0, timeout_s: float = 120.0,
             remaps: dict[str, str] | None = None, pace: str = 'auto',
             on_answer: Callable[[int, Answer], None] | None = None,
             parser: str = 'official') -> EvalResult:
    """Replay ``info``'s bag into the session's node, ask ``items`` and score them.

    Raises EvalSetupError when the node dies on the way, ValueError when ``items`` is
    empty.
    """
    if not items:
        raise ValueError('no questions to ask')
    log = session.log
    log(f'replaying {info.bag_path} ({info.num_frames or "?"} frames, {info.transport}) '
        f'into {session.node_name} ...')
    stats = session.replay(info, rate=rate, remaps=remaps, pace=pace)
    geometry = '' if stats.geometry_frames is None else f', {stats.geometry_frames} with geometry'
    trouble = ''.join([f', {stats.pace_timeouts} pacing timeouts' if stats.pace_timeouts
                       else '', f', {stats.lost} frames lost on the way' if stats.lost else ''])
    log(f'replayed {stats.frames} frames in {stats.replay_s:.1f} s + {stats.settle_s:.1f} s '
        f'to settle (paced on {stats.pace}{trouble}); node has '
        f'{session.monitor.status.buffer_length} buffered{geometry}, '
        f'{session.monitor.status.keyframe_count} keyframes'
        f'{"" if stats.settled else " (did not settle in time)"}')
    log(f'asking {len(items)} questions ...')
    started = time.monotonic()
    answers = ask_all(session, items, budget, timeout_s, on_answer)
    ask_s = time.monotonic() - started
    report = score_answers(answers, parser)
    status = session.monitor.status
    run = {'bag_dir': str(info.bag_dir), 'node': session.node_name,
           'launched': session.launched is not None,
           'model_profile': status.model_profile, 'model_state': session.model_state,
           'questions': len(answers), 'ask_s': round(ask_s, 3),
           'replay': asdict(stats)}
    return EvalResult(report, answers, error_counts(answers), stats, run)


def write_results(result: EvalResult, out_dir: str | Path,
                  title: str = 'vlm3r_node spatial QA') -> dict[str, Path]:
    """Write results.json, results.csv, scores.png and answers.jsonl; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {'json': out / 'results.json', 'csv': out / 'results.csv',
             'png': out / 'scores.png', 'answers': out / 'answers.jsonl'}
    doc = {**result.report.to_dict(), 'errors': result.errors, 'run': result.run}
    paths['json'].write_text(json.dumps(doc, indent=1), encoding='utf8')
    result.report.to_csv(paths['csv'])
    plot_bar_chart(result.report, paths['png'], title=title)
    scores = {s.id: s for s in result.report.items}
    with paths['answers'].open('w', encoding='utf8') as fh:
        for answer in result.answers:
            fh.write(json.dumps(answer.to_json(scores.get(answer.item.id))) + '\n')
    return paths


def summary_text(result: EvalResult) -> str:
    """Return the per-task table, overall vs chance and the error counts, for printing."""
    report = result.report
    errors = ', '.join(f'{name} {n}' for name, n in result.errors.items())
    official = ', '.join(f'{bench} {"n/a" if value is None else f"{100 * value:.1f}%"}'
                         for bench, value in report.benchmarks.items())
    return '\n'.join([
        report.to_table(),
        f'overall by benchmark: {official} over {len(result.answers)} questions '
        f'(combined, ours: {100 * report.overall:.1f}% vs chance '
        f'{100 * report.overall_chance:.1f}%)',
        f'responses by code: {errors}'])


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    parser = argparse.ArgumentParser(prog='vlm3r-eval', description=__doc__.splitlines()[0])
    parser.add_argument('bag_dir', type=Path, metavar='DATA_DIR',
                        help='directory with bag/ and qa.json, or a VSI-Bench / VSTI-Bench '
                        'download in its published layout (question table + videos)')
    parser.add_argument('--protocol', default='product', choices=('product', 'reference'),
                        help="the launched node's protocol: product (streaming/coverage "
                        'defaults) or reference (the official evaluation path: 32 linspace '
                        'frames, fresh CUT3R, 16 free greedy tokens, official parser, fp16); '
                        'a running node must already run it (default product)')
    parser.add_argument('--parser', default='official', choices=('official', 'lenient'),
                        help="how answers are scored: official (the benchmarks' rule, "
                        "default) or lenient (the node's operator-facing parse)")
    parser.add_argument('--benchmark', default='auto', choices=('auto', 'vsibench', 'vstibench'),
                        help='benchmark layout of DATA_DIR (auto: from the table columns)')
    parser.add_argument('--videos', type=Path,
                        help='where the benchmark videos are (default DATA_DIR)')
    parser.add_argument('--stream', default='sampled', choices=('sampled', 'all'),
                        help="benchmark mode: publish each video's 32 reference frames "
                        '(sampled, default) or every frame (all: the node samples them)')
    parser.add_argument('--image-topic', default='/camera/image_raw',
                        help='benchmark mode with a running node: its image topic')
    parser.add_argument('--node', default='/vlm3r_node',
                        help='fully qualified name of a running node (default /vlm3r_node)')
    parser.add_argument('--launch', action='store_true',
                        help='start a node as a subprocess for this evaluation')
    parser.add_argument('--profile', default='tiny', choices=('tiny', 'vlm3r-7b', 'none'),
                        help='model_profile of the launched node (default tiny)')
    parser.add_argument('--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='extra parameter for the launched node (repeatable)')
    parser.add_argument('--rate', type=float, default=0.0,
                        help='replay speed factor; 0 = as fast as pacing allows (default)')
    parser.add_argument('--pace', default='auto', choices=('auto', 'geometry', 'ingest', 'none'),
                        help='replay pacing: geometry (every frame gets geometry), ingest '
                        '(every frame arrives), none; auto: geometry when the node reports '
                        'often enough (default)')
    parser.add_argument('--remap', action='append', default=[], metavar='FROM:=TO',
                        help='publish a bag topic elsewhere (for a running node)')
    parser.add_argument('--out', type=Path, help='output directory (default DATA_DIR/eval)')
    parser.add_argument('--tasks', nargs='+', help='only these tasks')
    parser.add_argument('--limit', type=int, help='at most N questions per task')
    parser.add_argument('--budget', type=int, default=0,
                        help="keyframes per question (default: the node's keyframe_budget)")
    parser.add_argument('--timeout', type=float, default=120.0,
                        help='seconds to wait for each answer (default 120)')
    parser.add_argument('--ready-timeout', type=float, default=120.0,
                        help='seconds to wait for the node and its model (default 120)')
    return parser


def open_session(args: argparse.Namespace, info: BagInfo, out: Path,
                 log: Callable[[str], None] = print) -> NodeSession:
    """Return a (not yet entered) NodeSession for parsed CLI-style ``args``.

    ``args`` needs ``launch``, ``profile``, ``param``, ``node`` and ``ready_timeout``.
    Raises ValueError for a malformed --param.
    """
    if args.launch:
        namespace = f'/vlm3r_eval_{os.getpid()}_{int(time.time() * 1000) % 100000}'
        params = node_parameters(info, args.profile, namespace, parse_params(args.param),
                                 protocol=getattr(args, 'protocol', 'product'))
        return NodeSession(launch_params=params, namespace=namespace,
                           log_path=out / 'node.log', ready_timeout_s=args.ready_timeout,
                           log=log)
    return NodeSession(args.node, ready_timeout_s=args.ready_timeout, log=log)


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation; return 0, 1 (setup failure) or 2 (questions unanswered)."""
    from vlm3r_ros.tools.replay import parse_remaps
    args = build_parser().parse_args(argv)
    out = args.out or args.bag_dir / 'eval'
    from vlm3r_ros.eval.benchmark_data import looks_like_benchmark
    if args.benchmark != 'auto' or looks_like_benchmark(args.bag_dir):
        from vlm3r_ros.tools.benchmark_eval import run_benchmark
        return run_benchmark(args, out)
    try:
        info = load_bag_dir(args.bag_dir)
        items = select_items(info.items, args.tasks, args.limit)
        if not items:
            raise EvalSetupError('no question left after --tasks/--limit')
        remaps = parse_remaps(args.remap)
        session = open_session(args, info, out)
    except (EvalSetupError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return EXIT_SETUP
    try:
        with session:
            result = evaluate(session, info, items, rate=args.rate, budget=args.budget,
                              timeout_s=args.timeout, remaps=remaps, pace=args.pace,
                              parser=args.parser)
    except EvalSetupError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return EXIT_SETUP
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return EXIT_SETUP
    if session.node_exit_code not in (None, 0):
        print(f'warning: the launched node exited with code {session.node_exit_code}')
    paths = write_results(result, out)
    print(summary_text(result))
    print(f'wrote {", ".join(str(p) for p in paths.values())}')
    return EXIT_UNANSWERED if result.unanswered else EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
