"""Scene memory of the engine: save, load and reset the buffered scene.

What a saved scene holds and how it is checked is :mod:`vlm3r_ros.pipeline.scene_store`.
This mixin of :class:`~vlm3r_ros.pipeline.engine.SpatialEngine` captures the live scene
(buffered frames with their poses, voxel keys and cached visual tokens, the coloured
reconstruction, the trajectory graph and the geometry stream's recurrent state) and puts
a saved one in its place:

* same model identity (profile, dtype, weight digests), voxel size and cache mode: every
  cached result is reused, and the geometry stream continues from the saved state, so
  new frames land in the same world frame as the saved ones;
* otherwise only the images (and depth, intrinsics) are kept and the geometry worker
  recomputes everything from them, oldest first, through a fresh stream.

Both run under the geometry lock, so the worker never processes a frame half-way
through a swap; image ingestion never waits for them (frames that arrive during a load
are kept after the restored ones and get geometry in the restored world).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vlm3r_ros.pipeline.frame_buffer import FrameRecord
from vlm3r_ros.pipeline.scene_store import SavedFrame, Scene, read_scene, write_scene

if TYPE_CHECKING:
    from vlm3r_ros.pipeline.engine import SpatialEngine

LOG = logging.getLogger(__name__)


class SceneNotReady(RuntimeError):
    """A scene cannot be loaded now (the configured model is not loaded yet)."""


@dataclass(frozen=True)
class SceneSummary:
    """What a save or load did: file, frames, bytes, and whether results were reused."""

    path: str
    frames: int
    nbytes: int
    reused: bool
    message: str


def _tokens_to_numpy(tokens: Any) -> tuple[np.ndarray | None, str]:
    """Return cached tokens as an array in their own precision and the dtype's name
    (float32 and float16 as such; bfloat16, which NumPy lacks, as its int16 bit pattern);
    (None, '') without tokens."""
    if tokens is None:
        return None, ''
    if not hasattr(tokens, 'detach'):
        return np.asarray(tokens, np.float32), 'float32'
    import torch
    tensor = tokens.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy(), 'bfloat16'
    if tensor.dtype == torch.float16:
        return tensor.numpy(), 'float16'
    return tensor.float().numpy(), 'float32'


def _tokens_to_torch(array: np.ndarray, dtype: str, device: Any) -> Any:
    """Return the torch tensor :func:`_tokens_to_numpy` wrote, bit for bit, on ``device``."""
    import torch
    tensor = torch.from_numpy(np.array(array))  # a writable copy of the file's bytes
    if dtype == 'bfloat16':
        tensor = tensor.view(torch.bfloat16)
    return tensor.to(device)


class SceneMemory:
    """Mixin: ``save_scene``, ``load_scene``, ``load_scene_when_ready``, ``reset_scene``."""

    def save_scene(self: 'SpatialEngine', path: str) -> SceneSummary:
        """Write the live scene to ``path`` (atomically); return what was written.

        Raises SceneFileError when the file cannot be written; the live scene is not
        changed either way.
        """
        with self._geometry_lock:  # a consistent cut: no frame is half-processed
            with self._lock:
                bundle, stream = self._bundle, self._stream
                graph, graph_settings = self.graph.export_state(), self.graph.settings()
            records = self.buffer.snapshot()
            state = dict(stream.export_state()) if (
                bundle is not None and stream is not None
                and hasattr(stream, 'export_state')) else {}
            cloud = self.cloud.entries()
            # Records' fields are replaced, never mutated, so these references stay valid.
            fields = [(r.frame_id, r.stamp_ns, r.image, r.depth, r.intrinsics, r.pose,
                       r.voxels, r.tokens) for r in records]
        frames = []
        for frame_id, stamp, image, depth, intrinsics, pose, voxels, tokens in fields:
            array, dtype = _tokens_to_numpy(tokens)
            frames.append(SavedFrame(frame_id, stamp, image, depth, intrinsics, pose, voxels,
                                     array, dtype))
        scene = Scene(frames=frames, model=dict(bundle.identity) if bundle else {},
                      settings=self._scene_settings(graph_settings), graph=graph,
                      stream=state, cloud=cloud)
        nbytes = write_scene(path, scene)
        with_geometry = sum(f.pose is not None for f in frames)
        return SceneSummary(str(path), len(frames), nbytes, True,
                            f'saved {len(frames)} frames ({with_geometry} with geometry), '
                            f'{nbytes / 1e6:.1f} MB')

    def _scene_settings(self: 'SpatialEngine', graph_settings: dict[str, Any]) -> dict[str, Any]:
        return {'voxel_size_m': self.config.voxel_size_m,
                'keyframe_voxel_m': self.config.coverage_voxel_m(),
                'cache_mode': self.config.cache_mode,
                'reconstruction': self.config.reconstruction,
                'points_source': self.config.points_source,
                'pose_source': self.config.pose_source(
                    self._bundle.profile if self._bundle is not None else ''),
                'min_confidence': self.config.min_confidence, 'graph': graph_settings}

    def load_scene(self: 'SpatialEngine', path: str,
                   keep_from_id: int | None = None) -> SceneSummary:
        """Replace the live scene by the one saved at ``path``; return what was loaded.

        Buffered frames are dropped except those added after the call began (or with ids
        from ``keep_from_id``) that are newer than the saved scene: they are kept after it
        and get geometry in the restored world. An answer computed while the scene changes
        is refused with BUSY (retry).

        Raises SceneFileError for a missing, truncated, corrupt or foreign file and
        SceneNotReady while the configured model is still loading; in both cases the
        live scene is untouched.
        """
        if keep_from_id is None:
            keep_from_id = self.buffer.next_id  # frames arriving from now on are kept
        scene = read_scene(path)  # every check happens here, before anything changes
        if not scene.frames:
            raise SceneNotReady(f'{path!r} holds no frames; nothing to load')
        with self._lock:
            bundle, ready = self._bundle, self._stream is not None
        if self._loader is not None and not ready:
            raise SceneNotReady('the model is not loaded yet; load the scene once it is')
        reuse, why = self._reusable(scene, bundle)
        records = [self._record(frame, reuse, bundle) for frame in scene.frames]
        with self._geometry_lock:  # the worker is between frames
            graph = self._new_graph()
            if reuse:
                reuse, why = self._continue_stream(scene, graph)
                if not reuse:
                    records = [self._record(frame, False, None) for frame in scene.frames]
            elif self._stream is not None:
                self._stream.reset(mode='new_sequence')
            with self._lock:  # readers see the old scene or the new one, not a mix
                self.coverage.clear()
                self.cloud.clear()
                offset, kept = self.buffer.restore(records, keep_from_id)
                if reuse:
                    graph.renumber_frames(offset)
                    self._index_restored(records, scene.cloud, offset)
                    self._geometry_frames += sum(r.pose is not None for r in records)
                self.graph = graph
                self._invalidate_selection()
                self._per_query_tokens = None
                self._scene_generation += 1
                self._worker_epoch = self._stream_epoch  # the stream is already right
            buffered = [r for r in records if self.buffer.get(r.frame_id) is r]
            todo = kept if reuse else buffered + kept
            with self._pending_cv:
                pending = self._pending
                if pending is not None and self.buffer.get(pending.frame_id) is not pending:
                    self._pending = None  # replaced by its new record in `kept`, or gone
                self._backlog.clear()
                self._backlog.extend(todo)
                self._pending_cv.notify()
        n = len(buffered)
        dropped = len(records) - n
        note = f' ({dropped} oldest dropped by buffer_max_frames/buffer_max_mb)' if dropped else ''
        if reuse:
            message = f'loaded {n} frames{note}; geometry and tokens reused (same model)'
        else:
            message = (f'loaded {n} frames{note}; geometry and tokens are being recomputed '
                       f'({why})')
        LOG.info('scene %s: %s', path, message)
        return SceneSummary(str(path), n, 0, reuse, message)

    def _index_restored(self: 'SpatialEngine', records: list[FrameRecord],
                        cloud: list[tuple[int, int, np.ndarray, np.ndarray]],
                        offset: int) -> None:
        """Put restored frames' voxels into the coverage index and the reconstruction.

        Mirror protocol of the buffer: add first, then remove again when the frame is no
        longer buffered (an ingest may evict it concurrently; removal is idempotent).
        """
        for rec in records:
            if rec.voxels is not None:
                self.coverage.add(rec.frame_id, rec.stamp_ns, rec.voxels)
                if self.buffer.get(rec.frame_id) is not rec:
                    self.coverage.remove(rec.frame_id)
        for frame_id, stamp, keys, rgb in cloud:
            self.cloud.add(frame_id + offset, stamp, keys, rgb)
            if self.buffer.get(frame_id + offset) is None:
                self.cloud.remove(frame_id + offset)

    def _reusable(self: 'SpatialEngine', scene: Scene, bundle: Any) -> tuple[bool, str]:
        """Return whether the saved results fit the live engine, and why not."""
        if bundle is None:
            return False, 'no model loaded'
        if not scene.model or scene.model != bundle.identity:
            changed = sorted(k for k in set(scene.model) | set(bundle.identity)
                             if scene.model.get(k) != bundle.identity.get(k))
            return False, f'saved with another model ({", ".join(changed) or "unknown"} differ)'
        live = self._scene_settings({})
        for key in ('voxel_size_m', 'keyframe_voxel_m', 'cache_mode', 'points_source',
                    'pose_source', 'min_confidence'):
            if scene.settings.get(key) != live[key]:
                return False, f'{key} differs ({scene.settings.get(key)!r} vs {live[key]!r})'
        if live['reconstruction'] and not scene.settings.get('reconstruction'):
            return False, 'the saved scene has no reconstruction'
        if not scene.stream:
            return False, 'no geometry stream state saved'
        return True, ''

    def _continue_stream(self: 'SpatialEngine', scene: Scene, graph: Any) -> tuple[bool, str]:
        """Install the saved stream state and graph; (False, why) when they do not fit."""
        stream = self._stream
        try:
            stream.import_state(scene.stream)  # type: ignore[union-attr]
        except (ValueError, AttributeError) as exc:
            stream.reset(mode='new_sequence')  # type: ignore[union-attr]
            return False, f'stream state does not fit: {exc}'
        try:
            if scene.settings.get('graph') != graph.settings():
                raise ValueError('graph settings differ')
            graph.import_state(scene.graph)
        except ValueError:
            graph.clear()  # rebuilt from the saved poses instead (same frames, same order)
            for frame in scene.frames:
                if frame.pose is not None:
                    graph.add_pose(frame.frame_id, frame.stamp_ns, frame.pose)
        return True, ''

    @staticmethod
    def _record(frame: SavedFrame, reuse: bool, bundle: Any) -> FrameRecord:
        record = FrameRecord(frame.frame_id, frame.stamp_ns, frame.image, frame.depth,
                             frame.intrinsics)
        if reuse:
            record.pose, record.voxels = frame.pose, frame.voxels
            if frame.tokens is not None:
                record.tokens = _tokens_to_torch(frame.tokens, frame.tokens_dtype,
                                                 getattr(bundle.spatial, 'device', 'cpu'))
        return record

    def load_scene_when_ready(self: 'SpatialEngine', path: str, timeout_s: float = 600.0,
                              done: Any = None) -> threading.Thread:
        """Load ``path`` in a background thread once the model is loaded.

        Frames that arrive from this call on (while the model loads) are kept after the
        saved ones. ``done(summary, error)`` is called with the SceneSummary or the
        exception. Returns the thread.
        """
        keep_from_id = self.buffer.next_id

        def run() -> None:
            summary, error = None, None
            try:
                if self._loader is not None and not self.wait_loaded(timeout_s):
                    raise SceneNotReady(f'the model did not load; scene {path!r} not loaded')
                summary = self.load_scene(path, keep_from_id)
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                error = exc
            if done is not None:
                done(summary, error)

        thread = threading.Thread(target=run, name='vlm3r-scene-load', daemon=True)
        thread.start()
        return thread

    def reset_scene(self: 'SpatialEngine') -> int:
        """Forget the scene (frames, keyframes, reconstruction, trajectory, stream state)
        for a new place; return the number of frames dropped. The model stays loaded."""
        with self._geometry_lock:
            with self._lock:
                dropped = self.buffer.clear()
                self.coverage.clear()
                self.cloud.clear()
                self.graph = self._new_graph()
                self._invalidate_selection()
                self._per_query_tokens = None
                self._scene_generation += 1
                if self._stream is not None:
                    self._stream.reset(mode='new_sequence')
                self._worker_epoch = self._stream_epoch
            with self._pending_cv:
                self._backlog.clear()
                pending = self._pending
                if pending is not None and self.buffer.get(pending.frame_id) is not pending:
                    self._pending = None
        return len(dropped)
