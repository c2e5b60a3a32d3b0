"""The spatial engine: buffer, geometry worker, answer worker, route planning.

Threads (none of them is a ROS callback):
  * the caller's ingest thread calls :meth:`SpatialEngine.submit_frame`, which only
    appends to the buffer and hands the frame to the geometry worker (latest frame wins);
  * the geometry worker runs the geometry encoder once per processed frame (streaming
    state), turns its pointmap into voxels for keyframe coverage, its pose into the
    trajectory graph, and (``cache_mode='streaming'``) caches the frame's fused visual
    tokens so that a question only runs the LLM;
  * the answer worker takes requests from a bounded queue (BUSY past it), selects
    keyframes by maximum coverage and asks the model.
The model calls run only in the two workers. A model error is caught, reported in the
status and sent back as INTERNAL_ERROR; the engine keeps serving.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field, fields
from typing import Any, Callable

import numpy as np

from vlm3r_ros.pipeline.coverage import CoverageIndex, Selection
# The engine's types, re-exported: callers import them from here.
from vlm3r_ros.pipeline.engine_types import (  # noqa: F401
    RGB_KEYFRAME_VOXEL_M, EngineConfig, EngineStatus, GeometryStream, ModelBundle, ModelState,
    SpatialModel)
from vlm3r_ros.pipeline.errors import ErrorCode, RequestError
from vlm3r_ros.pipeline.frame_buffer import FrameBuffer, FrameRecord
from vlm3r_ros.pipeline.poses import PoseHistory
from vlm3r_ros.pipeline.query_answering import QueryAnswering
from vlm3r_ros.pipeline.reconstruction import (GeometryEvent, VoxelCloud, colored_voxels,
                                                mean_confidence)
from vlm3r_ros.pipeline.requests import QueryRequest, QueryResult, RouteRequest, RouteResult
from vlm3r_ros.pipeline.tracked_stream import TrackedStream
from vlm3r_ros.pipeline.route_planning import RoutePlanning
from vlm3r_ros.pipeline.scene_memory import SceneMemory
from vlm3r_ros.pipeline.voxels import points_from_depth, voxel_keys
from vlm3r_ros.planning.trajectory_graph import EDGE_TRAVERSED, GroundPlane, TrajectoryGraph

LOG = logging.getLogger(__name__)


class RequestFuture(Future):
    """The Future of a queued request; :meth:`SpatialEngine.cancel` stops it."""

    def __init__(self) -> None:
        """Create a pending future with a clear cancel flag."""
        super().__init__()
        self.cancel_requested = threading.Event()


@dataclass
class _Job:
    kind: str
    request: Any
    future: RequestFuture
    feedback: Callable[[str, float], None] | None = None
    on_token: Callable[[str], None] | None = None
    enqueued: float = field(default_factory=time.monotonic)


_WAKE = _Job('wake', None, RequestFuture())


class SpatialEngine(QueryAnswering, RoutePlanning, SceneMemory):
    """Frames in, answers and routes out; see the module docstring for the threads.

    Its parts: answering (:mod:`.query_answering`), route planning (:mod:`.route_planning`)
    and scene memory (save, load, reset: :mod:`.scene_memory`); the plain types are in
    :mod:`.engine_types`.
    """

    def __init__(self, config: EngineConfig,
                 loader: Callable[[], ModelBundle] | None = None) -> None:
        """Create an idle engine; call :meth:`start` to run its workers."""
        self.config = config
        self._loader = loader
        self._bundle: ModelBundle | None = None
        self._model_state = ModelState.NOT_CONFIGURED if loader is None else ModelState.UNLOADED
        self._model_error = '' if loader else 'no model configured (model_profile is "none")'
        self._last_error = ''
        self._lock = threading.Lock()
        self.coverage = CoverageIndex()
        self.cloud = VoxelCloud(config.voxel_size_m)  # filled with config.reconstruction
        # Called by the geometry worker after each processed frame (the odometry output).
        self.on_geometry: Callable[[GeometryEvent], None] | None = None
        self.graph = self._new_graph()
        self.poses = PoseHistory(tolerance_ns=int(config.pose_tolerance_s * 1e9))
        self.buffer = FrameBuffer(config.max_frames, config.max_span_s, config.max_bytes,
                                  on_evict=self._on_evict,
                                  reset_threshold_s=config.reset_threshold_s)
        self._pending: FrameRecord | None = None
        # Frames to process in order before the pending one (a loaded scene's recompute).
        self._backlog: deque[FrameRecord] = deque()
        self._pending_cv = threading.Condition()
        # Held while the geometry worker takes and processes a frame; scene save/load/reset
        # take it so that they never see or replace a half-processed frame.
        self._geometry_lock = threading.Lock()
        self._jobs: queue.Queue[_Job] = queue.Queue(maxsize=config.request_queue_size)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stream: GeometryStream | None = None
        self._stream_epoch = 0  # bumped on buffer reset: the stream restarts its world
        self._received = 0
        self._skipped = 0
        self._geometry_frames = 0
        self._answered = 0
        self._selection_cache: Selection | None = None  # default selection, for status
        self._selection_version = 0  # bumped with every invalidation (status stores safely)
        # Bumped when a scene load or reset replaces the world: an answer computed across
        # one is refused (BUSY, retry) instead of mixing two scenes.
        self._scene_generation = 0
        self._worker_epoch = 0  # the stream epoch the geometry worker has applied
        self._load_thread: threading.Thread | None = None
        # per_query: the last keyframe set's fresh-state visual tokens (key, tokens); the
        # same frames through a fresh CUT3R give the same tokens, so a second question on
        # them skips the recomputation (cleared whenever the model changes).
        self._per_query_tokens: tuple[Any, list[Any]] | None = None

    def _new_graph(self) -> TrajectoryGraph:
        return TrajectoryGraph(node_spacing_m=self.config.route_node_spacing_m,
                               link_radius_m=self.config.route_link_radius_m,
                               up_axis=self.config.up_axis)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the geometry and answer workers (idempotent)."""
        if self._threads:
            return
        self._stop.clear()
        for name, target in (('vlm3r-geometry', self._geometry_loop),
                             ('vlm3r-answer', self._answer_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the workers; queued requests are answered SHUTTING_DOWN."""
        self._stop.set()
        with self._pending_cv:
            self._pending_cv.notify_all()
        try:
            self._jobs.put_nowait(_WAKE)  # wake the answer worker without waiting for a poll
        except queue.Full:
            pass
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads = []
        self._drain_jobs(ErrorCode.SHUTTING_DOWN, 'the node is deactivating or shutting down')

    # Settings read at use time, so a new value applies to the next frame or request.
    LIVE_SETTINGS = frozenset({
        'reset_threshold_s', 'geometry_rate_hz', 'min_confidence', 'keyframe_budget',
        'coverage_ratio', 'selection', 'cache_mode', 'max_new_tokens', 'option_decoding',
        'numeric_decoding', 'answer_parser', 'route_turn_threshold_deg', 'route_max_keyframes',
        'route_min_goal_probability'})

    def update_config(self, config: EngineConfig) -> list[str]:
        """Apply the live settings of ``config`` now; return the names that changed.

        Raises ValueError when a setting outside :data:`LIVE_SETTINGS` differs (those
        shape the buffer, voxels, queue or graph and need a new engine).
        """
        changed = [f.name for f in fields(EngineConfig)
                   if getattr(config, f.name) != getattr(self.config, f.name)]
        fixed = [name for name in changed if name not in self.LIVE_SETTINGS]
        if fixed:
            raise ValueError(f'cannot change {", ".join(fixed)} on a running engine')
        with self._lock:
            for name in changed:
                setattr(self.config, name, getattr(config, name))
            self._invalidate_selection()  # budget or ratio may have changed
        self.buffer.set_reset_threshold(config.reset_threshold_s)
        return changed

    def load_models(self, blocking: bool = False) -> None:
        """Load the models in a background thread (or inline with ``blocking``).

        The state goes LOADING, then READY or ERROR (with the reason in the status).
        Does nothing without a loader or while a load is running.
        """
        if self._loader is None:
            return
        with self._lock:
            if self._model_state in (ModelState.LOADING, ModelState.READY):
                return
            self._model_state = ModelState.LOADING
            self._model_error = ''
        if blocking:
            self._load()
        else:
            self._load_thread = threading.Thread(target=self._load, name='vlm3r-load',
                                                 daemon=True)
            self._load_thread.start()

    def _load(self) -> None:
        try:
            bundle = self._loader()  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - any loader failure is reported, not raised
            LOG.error('model load failed: %s', exc)
            with self._lock:
                self._model_state = ModelState.ERROR
                self._model_error = f'{type(exc).__name__}: {exc}'
                self._last_error = f'model load failed: {self._model_error}'
            return
        if self._geometry_frames:
            # A fresh geometry stream starts a new world origin: geometry from the previous
            # load would mix frames. Frames stay buffered; their derived data is dropped.
            self._forget_geometry()
        with self._lock:
            self._bundle = bundle
            self._per_query_tokens = None
            self._stream = self._new_stream(bundle)
            self._model_state = ModelState.READY
        # Frames buffered while loading get geometry as the worker reaches them.
        latest = self.buffer.latest()
        if latest is not None:
            self._hand_to_geometry(latest)

    def _new_stream(self, bundle: ModelBundle) -> GeometryStream:
        """Return the live geometry stream: the encoder's, or with tracked poses."""
        stream = bundle.new_geometry_stream()
        if self.config.pose_source(bundle.profile) == 'tracking':
            return TrackedStream(stream)  # type: ignore[return-value]
        return stream

    def wait_loaded(self, timeout_s: float) -> bool:
        """Block until the load ends; return True when the model is READY."""
        thread = self._load_thread
        if thread is not None:
            thread.join(timeout_s)
        return self._model_state == ModelState.READY

    def unload_models(self) -> None:
        """Free the models and every cached token (memory goes back to the device)."""
        with self._lock:
            bundle, self._bundle, self._stream = self._bundle, None, None
            self._per_query_tokens = None
            if self._loader is not None:
                self._model_state = ModelState.UNLOADED
        for record in self.buffer.snapshot():
            self.buffer.attach(record.frame_id, tokens=None)
        if bundle is not None:
            bundle.close()
        self._free_device_memory()

    @staticmethod
    def _free_device_memory() -> None:
        import gc
        import sys
        gc.collect()
        torch = sys.modules.get('torch')  # never import torch just to free nothing
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
        _trim_host_heap()

    # ------------------------------------------------------------------ ingest
    def submit_frame(self, stamp_ns: int, image: np.ndarray, depth: np.ndarray | None = None,
                     intrinsics: np.ndarray | None = None) -> bool:
        """Buffer one RGB frame and offer it to the geometry worker; never blocks on a model.

        Returns True when the buffer was reset because time went backwards (the caller
        logs it once). The image is stored by reference, downsampled only when larger
        than ``store_max_side``.
        """
        full_w = image.shape[1]
        image = _downsample(image, self.config.store_max_side)
        if depth is not None and depth.shape[:2] != image.shape[:2]:
            depth = _resize_depth(depth, image.shape[1], image.shape[0])
        if intrinsics is not None:
            scale = image.shape[1] / full_w  # K follows the stored (downsampled) image
            intrinsics = np.asarray(intrinsics, dtype=np.float64) * [[scale], [scale], [1.0]]
        result = self.buffer.add(stamp_ns, image, depth=depth, intrinsics=intrinsics)
        self._received += 1
        if result.reset:
            self._reset_world(stamp_ns)
        if result.accepted:
            self._hand_to_geometry(result.frame)
        return result.reset

    def submit_pose(self, stamp_ns: int, cam_to_world: np.ndarray) -> None:
        """Record an external camera pose (odometry) used instead of the encoder's pose."""
        self.poses.add(stamp_ns, cam_to_world)

    def _hand_to_geometry(self, record: FrameRecord) -> None:
        with self._pending_cv:
            if self._pending is not None:
                self._skipped += 1  # latest frame wins; the older one keeps no geometry
            self._pending = record
            self._pending_cv.notify()

    def _on_evict(self, record: FrameRecord) -> None:
        self.coverage.remove(record.frame_id)
        self.cloud.remove(record.frame_id)

    def _reset_world(self, stamp_ns: int) -> None:
        LOG.warning('frame stamps went backwards: buffer, keyframes and trajectory reset')
        self.coverage.clear()
        self.cloud.clear()
        with self._lock:
            self.graph = self._new_graph()
            self._stream_epoch += 1
            self._invalidate_selection()
        self.poses.drop_after(stamp_ns)

    def _forget_geometry(self) -> None:
        """Drop keyframe candidates, trajectory and per-frame geometry (new world origin)."""
        self.coverage.clear()
        self.cloud.clear()
        with self._lock:
            self.graph = self._new_graph()
            self._invalidate_selection()
        for record in self.buffer.snapshot():
            self.buffer.attach(record.frame_id, pose=None, voxels=None, tokens=None)

    # ------------------------------------------------------------------ geometry
    def _invalidate_selection(self) -> None:
        """Drop the status's cached default selection (call with ``_lock`` held)."""
        self._selection_cache = None
        self._selection_version += 1

    def _geometry_loop(self) -> None:
        self._worker_epoch = self._stream_epoch
        while not self._stop.is_set():
            rate = self.config.geometry_rate_hz  # read each frame: it may change live
            period = 1.0 / rate if rate > 0 else 0.0
            with self._pending_cv:
                while (self._pending is None and not self._backlog
                       and not self._stop.is_set()):
                    self._pending_cv.wait(0.5)
            if self._stop.is_set():
                continue
            started = time.monotonic()
            with self._geometry_lock:
                with self._pending_cv:
                    from_backlog = bool(self._backlog)
                    if from_backlog:
                        record = self._backlog.popleft()
                    else:
                        record, self._pending = self._pending, None
                if record is None:
                    continue  # a scene load or reset took it
                with self._lock:
                    bundle, stream = self._bundle, self._stream
                    if self._worker_epoch != self._stream_epoch and stream is not None:
                        # A new timeline: a brand-new sequence, new world frame.
                        stream.reset(mode='new_sequence')
                        self._worker_epoch = self._stream_epoch
                if bundle is None or stream is None:
                    continue  # no model: frames stay buffered without geometry
                if self.buffer.get(record.frame_id) is not record:
                    continue  # evicted or replaced (a scene load): its step would corrupt
                try:
                    self._process_frame(record, bundle, stream)
                except Exception as exc:  # noqa: BLE001 - report, keep serving
                    self._report_error(f'geometry failed on frame {record.frame_id}: '
                                       f'{type(exc).__name__}: {exc}')
            wait = period - (time.monotonic() - started)
            if wait > 0 and not from_backlog:  # a backlog is caught up at full speed
                self._stop.wait(wait)

    def _process_frame(self, record: FrameRecord, bundle: ModelBundle,
                       stream: GeometryStream) -> None:
        # camera_info intrinsics (when given) serve the tracked poses; the encoder alone
        # ignores them without a pose (no ray map).
        geom = stream.step(record.image, record.intrinsics)
        external = self.poses.lookup(record.stamp_ns)
        pose = external if external is not None else np.asarray(geom.pose, dtype=np.float64)
        points = self._world_points(record, geom, pose)
        conf = None
        if points is geom.pts_world and self.config.min_confidence > 0:
            conf = np.asarray(geom.conf).reshape(-1)
        keys = voxel_keys(np.asarray(points).reshape(-1, 3), self.config.coverage_voxel_m(),
                          conf=conf, min_conf=self.config.min_confidence or None)
        tokens = None
        if self.config.cache_mode == 'streaming':
            tokens = bundle.spatial.encode_frame(record.image, geom.tokens, points)
        self.coverage.add(record.frame_id, record.stamp_ns, keys)
        if self.config.reconstruction:
            keep = None if conf is None else conf >= self.config.min_confidence
            cloud_points = points
            if external is not None and points is geom.pts_world:
                # The encoder's world is not map_frame: place its camera-frame points with
                # the external pose instead.
                own = np.asarray(geom.pts_self, dtype=np.float64)
                cloud_points = own @ pose[:3, :3].T + pose[:3, 3]
            self.cloud.add(record.frame_id, record.stamp_ns, *colored_voxels(
                cloud_points, record.image, self.config.voxel_size_m, keep))
        if not self.buffer.attach(record.frame_id, pose=pose, voxels=keys, tokens=tokens):
            self.coverage.remove(record.frame_id)  # evicted while we worked
            self.cloud.remove(record.frame_id)
            return
        with self._lock:
            self.graph.add_pose(record.frame_id, record.stamp_ns, pose)
            self._geometry_frames += 1
            self._invalidate_selection()
        listener = self.on_geometry
        if listener is not None:
            listener(GeometryEvent(record.stamp_ns, pose, mean_confidence(geom.conf),
                                   external is not None))

    def _world_points(self, record: FrameRecord, geom: Any, pose: np.ndarray) -> np.ndarray:
        """Return (H, W, 3) world points: the encoder's pointmap, or depth back-projected."""
        if (self.config.points_source == 'depth' and record.depth is not None
                and record.intrinsics is not None):
            return points_from_depth(record.depth, record.intrinsics, pose, keep_grid=True)
        return geom.pts_world

    # ------------------------------------------------------------------ requests
    def ask(self, request: QueryRequest, feedback: Callable[[str, float], None] | None = None,
            on_token: Callable[[str], None] | None = None) -> RequestFuture:
        """Queue a question; return a Future of QueryResult (already done when refused).

        ``feedback(stage, progress)`` hears 'selecting_keyframes', 'prefill' and
        'decoding'; ``on_token(text)`` each piece of a generated answer (both from the answer
        worker). A constrained option answer arrives as one piece.
        """
        return self._submit(_Job('query', request, RequestFuture(), feedback, on_token))

    def plan(self, request: RouteRequest,
             feedback: Callable[[str, float], None] | None = None) -> RequestFuture:
        """Queue a route request; return a Future of RouteResult."""
        return self._submit(_Job('route', request, RequestFuture(), feedback))

    def cancel(self, future: Future) -> bool:
        """Cancel a request: a queued one leaves the queue at once (its slot is free) and
        is answered CANCELED; a running question stops decoding at its next token and is
        answered CANCELED with the text so far. Returns False when it had already ended."""
        if future.done():
            return False
        if isinstance(future, RequestFuture):
            future.cancel_requested.set()
        with self._jobs.mutex:  # take it out of the queue now, not when the worker gets to it
            queued = [job for job in self._jobs.queue if job.future is future]
            for job in queued:
                self._jobs.queue.remove(job)
            if queued:
                self._jobs.not_full.notify()
        for job in queued:
            if job.future.set_running_or_notify_cancel():
                job.future.set_result(self._failure(job.kind, ErrorCode.CANCELED,
                                                    'canceled while queued'))
        return True

    def _submit(self, job: _Job) -> RequestFuture:
        refusal = self._readiness_error()
        if refusal is not None:
            job.future.set_result(self._failure(job.kind, *refusal))
            return job.future
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            job.future.set_result(self._failure(
                job.kind, ErrorCode.BUSY,
                f'{self._jobs.maxsize} requests are already queued; retry later'))
        return job.future

    def _readiness_error(self) -> tuple[ErrorCode, str] | None:
        state = self._model_state
        if state == ModelState.READY:
            return None
        reasons = {
            ModelState.NOT_CONFIGURED: self._model_error or 'no model configured',
            ModelState.LOADING: 'the model is still loading; retry shortly',
            ModelState.ERROR: f'the model failed to load: {self._model_error}',
            ModelState.UNLOADED: 'the model is not loaded (node inactive?)',
        }
        return ErrorCode.MODEL_NOT_READY, reasons[state]

    @staticmethod
    def _failure(kind: str, code: ErrorCode, message: str) -> QueryResult | RouteResult:
        return QueryResult(code, message) if kind == 'query' else RouteResult(code, message)

    def _drain_jobs(self, code: ErrorCode, message: str) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not _WAKE and not job.future.done():
                job.future.set_result(self._failure(job.kind, code, message))

    def _answer_loop(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._jobs.get(timeout=0.5)
            except queue.Empty:
                continue
            if job is _WAKE:
                continue
            if not job.future.set_running_or_notify_cancel():
                continue  # the caller gave up (timeout) before we started
            try:
                refusal = self._readiness_error()
                if refusal is not None:
                    raise RequestError(*refusal)
                if job.kind == 'query':
                    result: QueryResult | RouteResult = self._answer(job.request, job)
                else:
                    result = self._route(job.request, job.feedback)
            except RequestError as exc:
                result = self._failure(job.kind, exc.code, exc.message)
            except Exception as exc:  # noqa: BLE001 - a model error must not kill the worker
                message = f'{type(exc).__name__}: {exc}'
                if 'out of memory' in str(exc).lower():
                    message = f'out of memory while answering ({exc}); caches were cleared'
                    self._clear_model_caches()
                self._report_error(f'request failed: {message}')
                result = self._failure(job.kind, ErrorCode.INTERNAL_ERROR, message)
            result.elapsed_s = time.monotonic() - job.enqueued
            with self._lock:
                self._answered += 1
            job.future.set_result(result)

    def _clear_model_caches(self) -> None:
        bundle = self._bundle
        clear = getattr(bundle.spatial, 'clear_cache', None) if bundle else None
        if clear is not None:
            clear()
        self._free_device_memory()

    def _report_error(self, message: str) -> None:
        LOG.error(message)
        with self._lock:
            self._last_error = message

    # ------------------------------------------------------------------ status
    def trajectory(self) -> np.ndarray:
        """Return the traversed trajectory's graph nodes as (N, 3) world points, in order."""
        with self._lock:
            ids, _ = self.graph.node_positions()
            nodes = sorted((self.graph.node(int(i)) for i in ids), key=lambda n: n.stamp_ns)
            return np.array([n.position for n in nodes], dtype=np.float64).reshape(-1, 3)

    def traversed_segments(self) -> tuple[np.ndarray, np.ndarray, GroundPlane]:
        """Return the trajectory's node positions (N, 3), its traversed edges (E, 2) as index
        pairs into them, and the ground plane (for the free-space grid)."""
        with self._lock:
            ids = self.graph.node_ids
            index = {node_id: k for k, node_id in enumerate(ids)}
            positions = np.array([self.graph.node(i).position for i in ids],
                                 dtype=np.float64).reshape(-1, 3)
            edges = np.array([(index[a], index[b]) for a, b, kind in self.graph.edges()
                              if kind == EDGE_TRAVERSED], dtype=np.int64).reshape(-1, 2)
            return positions, edges, self.graph.plane

    def status(self) -> EngineStatus:
        """Return a snapshot of counters, buffer, keyframes and model state."""
        stats = self.buffer.stats()
        with self._lock:
            sel, version = self._selection_cache, self._selection_version
        if sel is None:  # recomputed only after new geometry or a reset
            try:
                sel = self.select_keyframes()
            except Exception:  # noqa: BLE001 - status must never fail
                sel = None
            with self._lock:
                if version == self._selection_version:  # nothing changed meanwhile
                    self._selection_cache = sel
        with self._lock:
            return EngineStatus(
                model_state=self._model_state,
                model_profile=self._bundle.profile if self._bundle else '',
                model_error=self._model_error,
                frames_received=self._received,
                frames_dropped=stats.dropped + self._skipped,
                frames_evicted=stats.evicted + stats.cleared,
                buffer_length=stats.frames,
                buffer_span_s=stats.span_s,
                buffer_bytes=stats.nbytes,
                buffer_resets=stats.resets,
                geometry_frames=self._geometry_frames,
                keyframe_count=len(sel.frame_ids) if sel else 0,
                keyframe_coverage=float(sel.ratio) if sel else 0.0,
                voxels_observed=int(sel.total) if sel else 0,
                queued_requests=self._jobs.qsize(),
                requests_answered=self._answered,
                last_error=self._last_error,
                pose_source=(self.config.pose_source(self._bundle.profile)
                             if self._bundle else ''),
                tracking_lost=(self._stream.odometry.lost
                               if isinstance(self._stream, TrackedStream) else 0),
            )


def _trim_host_heap() -> None:
    """Give freed host memory back to the OS (glibc only; elsewhere nothing happens).

    glibc keeps freed blocks in its per-thread arenas: the worker and loader threads are new
    after every activate, so without a trim each deactivate/activate cycle left the previous
    model's host memory resident (RSS grew about 8 MB a cycle with the tiny model, and a
    reloaded 7B model's tensors below the mmap threshold would stay resident the same way).
    """
    import ctypes
    try:
        trim = getattr(ctypes.CDLL(None), 'malloc_trim', None)  # the process's own libc
    except OSError:
        return
    if trim is not None:
        trim(0)


def _downsample(image: np.ndarray, max_side: int) -> np.ndarray:
    """Return ``image`` resized so its longer side is at most ``max_side`` (area filter)."""
    h, w = image.shape[:2]
    if max_side <= 0 or max(h, w) <= max_side:
        return image
    import cv2
    scale = max_side / max(h, w)
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                      interpolation=cv2.INTER_AREA)


def _resize_depth(depth: np.ndarray, width: int, height: int) -> np.ndarray:
    """Return depth resized to the colour image's size (nearest: no mixed edges)."""
    import cv2
    return cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
