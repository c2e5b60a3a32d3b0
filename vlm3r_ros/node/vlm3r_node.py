"""The vlm3r_node lifecycle node: topics, services, action, status and diagnostics.

All logic lives in :class:`vlm3r_ros.pipeline.engine.SpatialEngine`; this file wires it
to ROS. Callback groups: image/depth/pose callbacks share one mutually exclusive group
and only decode and append (never wait for a model); services and the action sit in a
reentrant group and wait on the engine's futures with a timeout; the status timer has its
own group. A MultiThreadedExecutor runs them.

Lifecycle: configure validates parameters, builds the engine and starts loading the
model in the background; activate creates subscriptions, services and the action server
and (re)loads the model; deactivate answers every call in flight or queued (SHUTTING_DOWN),
then destroys them and frees model memory; cleanup drops the engine and its buffer;
shutdown does all of that and ends the process (:mod:`vlm3r_ros.node.process`). With
``autostart`` the node configures and activates itself. Scene memory: activate loads
``scene_path`` once the model is loaded; with ``scene_autosave`` deactivate and shutdown
save the scene there before the model is unloaded. The services and the action live
in :mod:`vlm3r_ros.node.services`.
"""
from __future__ import annotations

import functools
import os
import sys
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from visualization_msgs.msg import MarkerArray

from vlm3r_ros.ingest.image_codec import ImageDecodeError
from vlm3r_ros.msg import SceneStatus
from vlm3r_ros.node import params
from vlm3r_ros.node.nav_outputs import InputClock, NavOutputs
from vlm3r_ros.node.ros_convert import (
    camera_info_to_intrinsics, depth_to_array, diagnostics, image_to_rgb, keyframe_markers,
    points_to_path, pose_msg_to_matrix, stamp_to_ns, transform_to_matrix)
from vlm3r_ros.node.services import RequestServer, track_responses
from vlm3r_ros.pipeline.engine import ModelState, SpatialEngine
from vlm3r_ros.pipeline.input_checks import calibration_problem, depth_size_problem, stamp_problem
from vlm3r_ros.pipeline.input_monitor import InputMonitor
from vlm3r_ros.pipeline.pairing import DepthPairer, Paired

STREAM_STATES = {SceneStatus.STREAM_WAITING: 'WAITING', SceneStatus.STREAM_OK: 'OK',
                 SceneStatus.STREAM_STALE: 'STALE'}
# The model workers run Python-heavy inference that holds the GIL for long stretches. The
# executor and ingest threads release and re-take the GIL on every rcl call, and with
# CPython's default 5 ms switch interval each re-take can wait 5 ms behind a worker: under
# question load the image queue overflowed (about half the frames of a 30 Hz stream were
# lost in test_load.py). 1 ms slices keep ingest at camera rate.
GIL_SWITCH_INTERVAL_S = 0.001


class Vlm3rNode(LifecycleNode):
    """Spatial question answering and route planning over a camera stream."""

    def __init__(self, node_name: str = 'vlm3r_node', **kwargs: Any) -> None:
        """Declare parameters; with ``autostart`` the caller then calls :meth:`autostart`."""
        super().__init__(node_name, **kwargs)
        params.declare(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.config: params.NodeConfig | None = None
        self.engine: SpatialEngine | None = None
        self._ingest_group = MutuallyExclusiveCallbackGroup()
        self._service_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._subs: list[Any] = []
        self._requests: RequestServer | None = None
        # Set once the shutdown transition ran, and once its change_state response went
        # out: the process (vlm3r_ros.node.process) then ends.
        self.finalized = threading.Event()
        self.shutdown_answered = threading.Event()
        change_state = getattr(self, '_service_change_state', None)  # rclpy's lifecycle srv
        if change_state is not None:
            track_responses(change_state, self._on_change_state_sent)
        self._status_pub = None
        self._diag_pub = None
        self._path_pub = None
        self._marker_pub = None
        self._trajectory_pub = None
        self._trajectory_len = -1
        self._nav: NavOutputs | None = None  # ~/odometry, ~/cloud, ~/free_space
        self._input_clock = InputClock(self)  # max_input_age_s, stamp vs clock offset
        self._timer = None
        self._intrinsics = None
        # Colour frames paired with depth maps in either arrival order (approximate time);
        # rebuilt at configure with depth_tolerance_s and stamp_reset_threshold_s.
        self._depths: DepthPairer[Any, Any] = DepthPairer()
        self._pair_timer: Any = None
        self._tf_buffer: Any = None
        self._tf_listener: Any = None
        self._node_error = ''  # node-level problem (e.g. TF) shown in status/diagnostics
        self._last_frame_mono: float | None = None
        self._rejected = 0
        self._rate_mark = (time.monotonic(), 0, 0)
        self._rates = (0.0, 0.0)
        self._inputs = InputMonitor()  # input checks' counters, loss estimate, log limits
        self._scene_saved = True  # nothing to autosave before the first activation

    # ------------------------------------------------------------------ lifecycle
    def autostart(self) -> None:
        """Configure and activate now when the ``autostart`` parameter is true."""
        if self.get_parameter('autostart').value:
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate parameters, create the engine and publishers, start loading the model."""
        try:
            self.config = params.read(self)
        except ValueError as exc:
            self.get_logger().error(f'configure failed: {exc}')
            return TransitionCallbackReturn.FAILURE
        cfg = self.config
        loader = None
        if cfg.protocol == 'reference':
            self._log_protocol()
        if cfg.model_profile != 'none':
            from vlm3r_ros.models.loader import ModelSpec, load_bundle
            spec = ModelSpec.from_config(cfg)
            loader = functools.partial(load_bundle, spec)
            try:
                on_cpu = spec.resolved_device() == 'cpu'
            except Exception:  # noqa: BLE001 - the loader reports a bad device setting
                on_cpu = False
            if cfg.protocol == 'reference' and on_cpu:
                self.get_logger().warning(
                    'protocol reference on CPU: the model runs float32 (the reference runs '
                    'float16 on a GPU; CPU float16 matmuls are slow and not what it measured), '
                    'so answers can differ slightly from the fp16 reference')
            if sys.getswitchinterval() > GIL_SWITCH_INTERVAL_S:
                sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)  # process-wide; see the constant
        self.engine = SpatialEngine(cfg.engine_config(), loader)
        self._depths = DepthPairer(tolerance_ns=int(cfg.depth_tolerance_s * 1e9),
                                   reset_threshold_ns=int(cfg.stamp_reset_threshold_s * 1e9))
        self._inputs = InputMonitor(self.resolve_topic_name(cfg.subscribed_image_topic),
                                    cfg.qos_reliability, cfg.image_transport,
                                    pause_s=cfg.stale_timeout_s, rate_hz=cfg.camera_rate_hz)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self._status_pub = self.create_publisher(SceneStatus, '~/status', 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._path_pub = self.create_publisher(Path, '~/route', latched)
        self._marker_pub = self.create_publisher(MarkerArray, '~/keyframes', latched)
        self._trajectory_pub = self.create_publisher(Path, '~/trajectory', latched)
        self._timer = self.create_timer(cfg.status_period_s, self._publish_status,
                                        callback_group=self._timer_group)
        self._nav = NavOutputs(self, cfg, self.engine)
        self.engine.load_models()
        self._setup_tf()
        self.get_logger().info(f'configured: profile {cfg.model_profile}, fusion {cfg.fusion}, '
                               f'cache {cfg.cache_mode}, input {self._input_desc()}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the camera, offer the services and action, start the workers."""
        cfg, engine = self.config, self.engine
        assert cfg is not None and engine is not None
        engine.start()
        engine.load_models()  # reload after a deactivate that freed the model
        qos = self._image_qos()
        image_type = CompressedImage if cfg.image_transport == 'compressed' else Image
        self._subs = [self.create_subscription(image_type, cfg.subscribed_image_topic,
                                               self._on_image, qos,
                                               callback_group=self._ingest_group)]
        if cfg.camera_info_topic:
            self._subs.append(self.create_subscription(
                CameraInfo, cfg.camera_info_topic, self._on_camera_info, qos,
                callback_group=self._ingest_group))
        if cfg.depth_topic:
            self._subs.append(self.create_subscription(
                Image, cfg.depth_topic, self._on_depth, qos, callback_group=self._ingest_group))
            # Frames waiting for a depth map that is late or never comes leave on this timer.
            self._pair_timer = self.create_timer(0.05, self._poll_depth_pairs,
                                                 callback_group=self._ingest_group)
        if cfg.pose_topic:
            pose_type = Odometry if cfg.pose_topic_type == 'odometry' else PoseStamped
            self._subs.append(self.create_subscription(
                pose_type, cfg.pose_topic, self._on_pose, 50, callback_group=self._ingest_group))
        self._requests = RequestServer(self, self._service_group)
        self._load_scene_at_activate(cfg.scene_path)
        self.get_logger().info(f'active: listening on {self._input_desc()}')
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Answer calls in flight, stop subscriptions, services, workers; free the model."""
        self._teardown_io()
        if self.engine is not None:
            self.engine.stop()
            self._autosave_scene()  # before the unload drops the cached tokens
            if self.config is not None and self.config.unload_on_deactivate:
                self.engine.unload_models()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Drop the engine (buffer, caches, model) and the publishers."""
        self._release()
        self.config = None  # unconfigured: every parameter may change until configure
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Answer calls in flight, release everything from any state; the process ends."""
        self._teardown_io()
        self._release()
        self.finalized.set()
        return TransitionCallbackReturn.SUCCESS

    def _on_change_state_sent(self) -> None:
        if self.finalized.is_set():
            self.shutdown_answered.set()

    def _teardown_io(self, drain_timeout_s: float = 5.0) -> None:
        """Answer and destroy the services and action, then stop the inputs."""
        if self._requests is not None:
            # Every call in flight or queued is answered first (needs a spinning executor).
            self._requests.close(drain_timeout_s)
            self._requests = None
        if self._pair_timer is not None:
            self.destroy_timer(self._pair_timer)
            self._pair_timer = None
        self._submit_paired(self._depths.flush())  # frames still waiting for depth
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []

    def _release(self) -> None:
        if self._tf_listener is not None:
            self._tf_listener.unregister()
        self._tf_buffer = self._tf_listener = None
        if self._nav is not None:
            self._nav.destroy()
            self._nav = None
        if self.engine is not None:
            self.engine.stop()
            self._autosave_scene()
            self.engine.unload_models()
            self.engine = None
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        pubs = (self._status_pub, self._diag_pub, self._path_pub, self._marker_pub,
                self._trajectory_pub)
        for pub in pubs:
            if pub is not None:
                self.destroy_publisher(pub)
        self._status_pub = self._diag_pub = self._path_pub = self._marker_pub = None
        self._trajectory_pub = None

    # ------------------------------------------------------------------ scene memory
    def _load_scene_at_activate(self, path: str) -> None:
        """Load ``scene_path`` in the background once the model is loaded (when it exists).

        Autosave is armed only once that load succeeded (or there was no file): a scene
        file that could not be loaded yet (model still loading, or refused) is never
        overwritten by a deactivate.
        """
        self._scene_saved = True  # disarmed until we know the file may be replaced
        if not path or self.engine is None:
            self._scene_saved = False
            return
        path = os.path.expanduser(path)
        if not os.path.exists(path):
            self.get_logger().info(f'scene_path {path} does not exist yet; starting empty')
            self._scene_saved = False
            return

        def done(summary: Any, error: BaseException | None) -> None:
            if error is not None:
                self.get_logger().error(f'scene_path {path} not loaded: {error}; autosave is '
                                        'off for this activation so the file is kept')
            else:
                self._scene_saved = False  # arm autosave
                self.get_logger().info(f'scene_path {path}: {summary.message}')

        self.engine.load_scene_when_ready(path, done=done)

    def _autosave_scene(self) -> None:
        """Save the scene to ``scene_path`` with ``scene_autosave`` (once per activation;
        never an empty buffer over an existing file)."""
        cfg, engine = self.config, self.engine
        if (cfg is None or engine is None or not cfg.scene_autosave or not cfg.scene_path
                or self._scene_saved):
            return
        self._scene_saved = True  # a shutdown after a deactivate must not save the unloaded scene
        path = os.path.expanduser(cfg.scene_path)
        if len(engine.buffer) == 0 and os.path.exists(path):
            self.get_logger().info(f'scene autosave skipped: nothing buffered; {path} is kept')
            return
        try:
            summary = engine.save_scene(path)
            self.get_logger().info(f'scene saved to {path}: {summary.message}')
        except Exception as exc:  # noqa: BLE001 - a failed save never blocks the transition
            self.get_logger().error(f'scene autosave to {path} failed: {exc}')

    def _log_protocol(self) -> None:
        """Log what protocol 'reference' fixes, naming parameters set otherwise."""
        raw = {spec.name: self.get_parameter(spec.name).value for spec in params.SPECS}
        fixed = ', '.join(f'{k}={v!r}' for k, v in params.REFERENCE_PROTOCOL.items())
        self.get_logger().info(f'protocol reference (the official evaluation path): {fixed}')
        for name, (was, now) in params.protocol_overrides(raw).items():
            self.get_logger().info(f'protocol reference uses {name}={now!r} instead of {was!r}')

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, parameters: list[Any]) -> SetParametersResult:
        """Validate a run-time change; apply live ones now, refuse the rest with a reason."""
        changes = {p.name: p.value for p in parameters}
        config = self.config
        reason = params.check_change(changes, configured=config is not None,
                                     protocol=config.protocol if config else 'product')
        if reason is None and config is not None:
            new = params.apply_live(config, changes)
            try:
                new.engine_config()  # the combination must still be valid
                if self.engine is not None:
                    self.engine.update_config(new.engine_config())
            except ValueError as exc:
                reason = str(exc)
            else:
                self.config = new
                self._depths.tolerance_ns = int(new.depth_tolerance_s * 1e9)
                self._depths.reset_threshold_ns = int(new.stamp_reset_threshold_s * 1e9)
                self._inputs.set_rate(new.camera_rate_hz)
                self.get_logger().info('parameters applied live: ' + ', '.join(
                    f'{k}={v!r}' for k, v in changes.items()))
        if reason is not None:
            self.get_logger().warning(f'parameter change refused: {reason}')
            return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ ingest
    def _image_qos(self) -> QoSProfile:
        cfg = self.config
        assert cfg is not None
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=cfg.qos_depth,
                         reliability=qos_profile_sensor_data.reliability,
                         durability=DurabilityPolicy.VOLATILE)
        if cfg.qos_reliability == 'reliable':
            qos.reliability = ReliabilityPolicy.RELIABLE
        return qos

    def _input_desc(self) -> str:
        cfg = self.config
        if cfg is None:
            return ''
        return f'{self.resolve_topic_name(cfg.subscribed_image_topic)} ' \
               f'[{cfg.qos_reliability}, depth {cfg.qos_depth}]'

    def _reject(self, what: str, exc: Exception | str, counter: str | None = None) -> None:
        """Count and log (rate-limited per reason) an input that could not be used."""
        self._rejected += 1
        if counter is not None:
            self._inputs.count(counter)
        line = self._inputs.reject_line(what, str(exc), time.monotonic())
        if line is not None:
            self.get_logger().warning(line)

    def _bad_stamp(self, what: str, topic: str, header: Any) -> bool:
        """Reject (count, WARN naming the topic) a message with an unusable stamp."""
        reason = stamp_problem(header.stamp.sec, header.stamp.nanosec)
        if reason is None:
            return False
        self._rejected += 1
        line = self._inputs.bad_stamp(what, self.resolve_topic_name(topic), reason,
                                      time.monotonic())
        if line is not None:
            self.get_logger().warning(line)
        return True

    def _on_image(self, msg: Image | CompressedImage) -> None:
        engine = self.engine
        if engine is None:
            return
        assert self.config is not None
        if self._bad_stamp('image', self.config.subscribed_image_topic, msg.header):
            return
        if not self._input_clock.admit(msg.header):
            return  # older than max_input_age_s (counted)
        if self._nav is not None:
            self._nav.camera_frame(msg.header.frame_id)
        try:
            rgb = image_to_rgb(msg)
        except ImageDecodeError as exc:
            self._reject('image', exc)
            return
        now = self._last_frame_mono = time.monotonic()
        k = self._intrinsics
        K = None
        mismatch = None if k is None else \
            calibration_problem((k.width, k.height), (rgb.shape[1], rgb.shape[0]))
        if mismatch is not None:  # calibration for another resolution: unusable here
            self._inputs.count('calibration_mismatched', mismatch, now)
            self._warn_limited(mismatch, now)
        elif k is not None:
            K = k.matrix()
        stamp_ns = stamp_to_ns(msg.header.stamp)
        self._inputs.frame(stamp_ns, now)  # stamp gaps: frames lost before the node
        if self._tf_buffer is not None:
            self._pose_from_tf(msg.header.stamp)
        if self.config is not None and self.config.depth_topic:
            self._submit_paired(self._depths.add_frame(stamp_ns, (rgb, K), time.monotonic()))
        else:
            self._submit_paired([Paired(stamp_ns, (rgb, K), None)])

    def _submit_paired(self, frames: list[Paired[Any, Any]]) -> None:
        """Hand frames that left the depth pairing (in stamp order) to the engine."""
        engine = self.engine
        if engine is None:
            return
        for paired in frames:
            rgb, K = paired.frame
            depth = paired.depth
            problem = None if depth is None else depth_size_problem(depth.shape[:2],
                                                                    rgb.shape[:2])
            if problem is not None:  # another camera's view: never stretched to fit
                now = time.monotonic()
                self._inputs.count('depth_size_rejected', problem, now)
                self._warn_limited(problem, now)
                depth = None
            if engine.submit_frame(paired.stamp_ns, rgb, depth=depth, intrinsics=K):
                self._depths.reset_world(paired.stamp_ns)
                self.get_logger().warning('image stamps went backwards (looping bag?): '
                                          'buffer, keyframes and trajectory were reset '
                                          '(and the depth pairing)')

    def _poll_depth_pairs(self) -> None:
        self._submit_paired(self._depths.poll(time.monotonic()))

    def _setup_tf(self) -> None:
        """Listen to TF for camera poses when ``tf_camera_frame`` is set and tf2 exists."""
        cfg = self.config
        if cfg is None or not cfg.tf_camera_frame:
            return
        try:
            from tf2_ros import Buffer, TransformListener
        except ImportError:
            self._node_error = (f'tf_camera_frame={cfg.tf_camera_frame!r} is set but tf2_ros '
                                'is not installed (wheel-based install?); use pose_topic')
            self.get_logger().error(self._node_error)
            return
        self._tf_buffer = Buffer()
        self._tf_listener = TransformListener(self._tf_buffer, self)

    def _pose_from_tf(self, stamp: Any) -> None:
        """Submit the camera pose at ``stamp`` from TF; report a missing transform once."""
        cfg = self.config
        assert cfg is not None and self.engine is not None
        try:
            from rclpy.time import Time
            transform = self._tf_buffer.lookup_transform(cfg.map_frame, cfg.tf_camera_frame,
                                                         Time.from_msg(stamp))
        except Exception as exc:  # noqa: BLE001 - tf2 raises several lookup exceptions
            self._node_error = (f'no transform {cfg.map_frame} -> {cfg.tf_camera_frame} at '
                                f'the frame stamp: {exc}')
            self._reject('tf', exc)
            return
        try:
            pose = transform_to_matrix(transform, cfg.max_pose_position_m)
        except ValueError as exc:
            self._reject('tf', exc, 'poses_rejected')
            return
        self.engine.submit_pose(stamp_to_ns(stamp), pose)

    def _on_depth(self, msg: Image) -> None:
        assert self.config is not None
        if self._bad_stamp('depth', self.config.depth_topic, msg.header):
            return
        try:
            depth = depth_to_array(msg, self.config.depth_scale)
        except ImageDecodeError as exc:
            self._reject('depth', exc)
            return
        self._submit_paired(self._depths.add_depth(stamp_to_ns(msg.header.stamp), depth,
                                                   time.monotonic()))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self._intrinsics = camera_info_to_intrinsics(msg)
        except ImageDecodeError as exc:
            self._reject('camera_info', exc, 'camera_info_rejected')

    def _on_pose(self, msg: Odometry | PoseStamped) -> None:
        cfg = self.config
        if self.engine is None or cfg is None:
            return
        if self._bad_stamp('pose', cfg.pose_topic, msg.header):
            self._inputs.count('poses_rejected')
            return
        try:
            self.engine.submit_pose(*pose_msg_to_matrix(msg, cfg.max_pose_position_m))
        except ValueError as exc:
            self._reject('pose', exc, 'poses_rejected')

    def _warn_limited(self, text: str, now: float) -> None:
        """Log a WARN at most once per reason and interval (see RateLimitedLog)."""
        line = self._inputs.log.line(text, now)
        if line is not None:
            self.get_logger().warning(line)

    # ------------------------------------------------------------------ status
    def _stream_state(self) -> tuple[int, float | None]:
        assert self.config is not None
        if self._last_frame_mono is None:
            return SceneStatus.STREAM_WAITING, None
        age = time.monotonic() - self._last_frame_mono
        state = SceneStatus.STREAM_STALE if age > self.config.stale_timeout_s \
            else SceneStatus.STREAM_OK
        return state, age

    def _publish_status(self) -> None:
        engine, cfg = self.engine, self.config
        if engine is None or cfg is None or self._status_pub is None:
            return
        status = engine.status()
        now = time.monotonic()
        t0, received0, geometry0 = self._rate_mark
        if now - t0 >= cfg.status_period_s * 0.5:
            dt = now - t0
            self._rates = ((status.frames_received - received0) / dt,
                           (status.geometry_frames - geometry0) / dt)
            self._rate_mark = (now, status.frames_received, status.geometry_frames)
        stream_state, age = self._stream_state()
        stamp = self.get_clock().now().to_msg()
        msg = SceneStatus()
        msg.header.stamp, msg.header.frame_id = stamp, cfg.map_frame
        msg.stream_state = stream_state
        msg.input_topic = self._input_desc()
        msg.frames_received = status.frames_received
        msg.frames_dropped = status.frames_dropped
        msg.frames_evicted = status.frames_evicted
        msg.frames_rejected = self._rejected
        pairs = self._depths.stats
        msg.depth_received = pairs.depth_received
        msg.depth_unpaired = pairs.depth_unpaired
        msg.frames_without_depth = pairs.frames_without_depth
        inputs = self._inputs.report(now)
        for name, value in inputs.counters.as_dict().items():
            setattr(msg, name, value)
        msg.frames_lost_estimated = inputs.loss.lost
        msg.recent_loss_ratio = float(inputs.loss.recent_ratio)
        msg.stream_period_s = float(inputs.loss.period_s or 0.0)
        msg.ingest_rate_hz, msg.geometry_rate_hz = (float(r) for r in self._rates)
        msg.buffer_length = status.buffer_length
        msg.buffer_span_s = float(status.buffer_span_s)
        msg.buffer_bytes = status.buffer_bytes
        msg.buffer_resets = status.buffer_resets
        msg.frames_too_old = self._input_clock.gate.too_old
        stamp_age = self._input_clock.gate.age_s
        msg.input_stamp_age_s = float('nan') if stamp_age is None else stamp_age
        msg.keyframe_count = status.keyframe_count
        msg.keyframe_coverage = float(status.keyframe_coverage)
        msg.voxels_observed = status.voxels_observed
        msg.model_state = int(status.model_state)
        msg.model_profile = status.model_profile or cfg.model_profile
        msg.queued_requests = status.queued_requests
        msg.requests_answered = status.requests_answered
        msg.last_error = status.last_error or self._node_error
        self._status_pub.publish(msg)
        self._publish_trajectory(engine, cfg.map_frame, stamp)
        if self._diag_pub is not None:
            array = diagnostics(status, STREAM_STATES[stream_state], self._input_desc(),
                                self.get_fully_qualified_name(), stamp, age, inputs)
            array.status.append(self._input_clock.diagnostic(self.get_fully_qualified_name()))
            self._diag_pub.publish(array)

    def _publish_trajectory(self, engine: SpatialEngine, frame_id: str, stamp: Any) -> None:
        """Publish the traversed trajectory (graph nodes) when it changed."""
        if self._trajectory_pub is None:
            return
        points = engine.trajectory()
        if len(points) != self._trajectory_len:
            self._trajectory_len = len(points)
            self._trajectory_pub.publish(points_to_path(points, frame_id, stamp))

    def _publish_keyframes(self, stamps_ns: list[int]) -> None:
        engine, cfg = self.engine, self.config
        if engine is None or cfg is None or self._marker_pub is None:
            return
        wanted = set(stamps_ns)
        poses = [(r.stamp_ns, r.pose) for r in engine.buffer.snapshot()
                 if r.stamp_ns in wanted and r.pose is not None]
        self._marker_pub.publish(keyframe_markers(poses, cfg.map_frame,
                                                  self.get_clock().now().to_msg()))

    @property
    def model_state(self) -> ModelState:
        """Return the engine's model state (NOT_CONFIGURED when unconfigured)."""
        return self.engine.status().model_state if self.engine else ModelState.NOT_CONFIGURED


def main(args: list[str] | None = None) -> None:
    """Run the node until SIGINT/SIGTERM or the shutdown transition; exit 1 on a crash."""
    from vlm3r_ros.node.process import run_node
    sys.exit(run_node(Vlm3rNode, args))


if __name__ == '__main__':
    main()
