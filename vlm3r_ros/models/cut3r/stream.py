"""Streaming CUT3R: one camera frame in, one :class:`FrameGeometry` out.

The recurrent state (``state_size`` tokens) and the pose memory (``local_mem_size``
slots) have fixed sizes and only the latest copy is kept, so an arbitrarily long stream
runs in constant memory.

Two resets (``reset(mode)``):

* ``'new_sequence'`` (:data:`RESET_NEW_SEQUENCE`, the default): a brand-new sequence, as
  the official rollout's first frame (``i == 0``): initial state and memory, the *learnt*
  pose token, frame numbering and the known-pose reference start again, and the next
  frame defines the world frame (its camera is the origin). The engine's world reset
  (stamps jumping back) uses it.
* ``'reference'`` (:data:`RESET_REFERENCE`): what the official ``reset`` mask of a view
  does: the state and the pose memory are re-initialised, but the sequence goes on, so
  the next frame still *reads its pose token from the (re-initialised) memory* instead of
  taking the learnt one; frame numbering and the ray-map reference pose carry on. Use it
  to reproduce a reference rollout that sets ``reset`` on a view (call it right after
  that view's ``step``, where the official code applies the mask).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, runtime_checkable

import numpy as np
import torch

from vlm3r_ros.models.cut3r.model import Cut3rModel
from vlm3r_ros.models.cut3r.preprocess import (
    ImageTransform,
    SizeSpec,
    pose_encoding_to_matrix,
    preprocess_image,
    ray_map,
    relative_pose,
)

#: Reset to a brand-new sequence (learnt pose token next; new world frame).
RESET_NEW_SEQUENCE = 'new_sequence'
#: Reset as the official ``reset`` mask: state and memory only; the pose is read from memory.
RESET_REFERENCE = 'reference'
RESET_MODES = (RESET_NEW_SEQUENCE, RESET_REFERENCE)


@dataclass
class FrameGeometry:
    """Geometry of one frame, at the model input resolution ``image_size``.

    Attributes:
        pts_world: ``(h, w, 3)`` float32 points in the world frame (the first frame's
            camera after the last reset; OpenCV axes: x right, y down, z forward), metres.
        conf: ``(h, w)`` float32 confidence of ``pts_world`` (>= 1, higher is better).
        pts_self: ``(h, w, 3)`` float32 points in this frame's camera, metres.
        conf_self: ``(h, w)`` float32 confidence of ``pts_self``.
        pose: ``(4, 4)`` float64 camera-to-world transform of this frame.
        tokens: ``(1 + P, dec_dim)`` tensor: the camera (pose) token, then the P patch
            tokens in row-major order, from the last decoder layer after its norm (what
            VLM-3R consumes; P = 729 at 432x432 with the 512 model). On the model's
            device and in its backbone dtype for PyTorch; float32 on CPU for ONNX Runtime.
        image_size: ``(h, w)`` of the model input.
        frame_index: index of the frame since the last ``'new_sequence'`` reset (0 = the
            first frame, which takes the learnt pose token; a ``'reference'`` reset does
            not restart the count).
        used_ray_map: whether known intrinsics + pose were fed as a ray map.
        transform: the :class:`ImageTransform` from the source image's pixels to the
            model input's (e.g. to read the pointmap at a source pixel).
    """

    pts_world: np.ndarray
    conf: np.ndarray
    pts_self: np.ndarray
    conf_self: np.ndarray
    pose: np.ndarray
    tokens: torch.Tensor
    image_size: tuple[int, int]
    frame_index: int
    used_ray_map: bool
    transform: Optional[ImageTransform] = None


@runtime_checkable
class GeometryEncoder(Protocol):
    """What the pipeline needs from a streaming geometry encoder."""

    def reset(self, mode: str = RESET_NEW_SEQUENCE) -> None:
        """Reset the stream: ``'new_sequence'`` (new world frame) or ``'reference'``."""

    def step(
        self,
        image: np.ndarray,
        intrinsics: Optional[np.ndarray] = None,
        cam_to_world: Optional[np.ndarray] = None,
        update: bool = True,
    ) -> FrameGeometry:
        """Process one HxWx3 uint8 RGB frame and return its geometry."""


class StreamBase:
    """Preprocessing, ray maps and bookkeeping shared by the PyTorch and ONNX streams.

    A stream holds one sequence's state and is not thread-safe: drive it from one
    worker thread.
    """

    #: Whether the backend can take a ray map (known intrinsics + pose).
    supports_ray_map = True

    def __init__(self, image_size: Optional[SizeSpec], resize_mode: str, patch_size: int) -> None:
        """Store the preprocessing settings and start an empty stream."""
        self.image_size = image_size
        self.resize_mode = resize_mode
        self.patch_size = patch_size
        self._frame_index = 0
        self._reference_pose: Optional[np.ndarray] = None

    @property
    def frame_index(self) -> int:
        """Return the number of frames processed since the last reset."""
        return self._frame_index

    def reset(self, mode: str = RESET_NEW_SEQUENCE) -> None:
        """Reset the stream (see the module docstring for the two modes).

        Args:
            mode: ``'new_sequence'``: forget everything; the next frame takes the learnt
                pose token and defines the world frame. ``'reference'``: re-initialise
                the state and the pose memory only, as the official ``reset`` mask; the
                next frame reads its pose token from the re-initialised memory. Before
                any frame both are the same (nothing to reset).

        Raises:
            ValueError: for another mode.
        """
        if mode == RESET_NEW_SEQUENCE:
            self._frame_index = 0
            self._reference_pose = None
            self._reset_backend()
        elif mode == RESET_REFERENCE:
            if self._frame_index > 0:
                self._reinit_backend()
        else:
            raise ValueError(f'unknown reset mode {mode!r}; use one of {RESET_MODES}')

    def export_state(self) -> dict[str, np.ndarray]:
        """Return the stream's whole state as plain arrays (for a saved scene).

        Keys: ``frame_index`` (one int64), ``reference_pose`` (4x4 float64, present only
        when the first frame had a known pose), and ``state`` / ``mem`` (float32, present
        once a frame was processed). :meth:`import_state` of a stream over the same weights
        continues the sequence exactly where this one stands.
        """
        out: dict[str, np.ndarray] = {'frame_index': np.array([self._frame_index], np.int64)}
        if self._reference_pose is not None:
            out['reference_pose'] = np.asarray(self._reference_pose, np.float64)
        out.update(self._backend_state())
        return out

    def import_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Continue from a state written by :meth:`export_state`.

        Raises:
            ValueError: when ``frame_index`` is missing or negative, the state and memory
                are not both given (after frame 0), or their shapes do not fit the model.
        """
        raw_index = np.asarray(arrays.get('frame_index', [-1])).reshape(-1)
        if raw_index.size != 1 or int(raw_index[0]) < 0:
            raise ValueError('stream state has no valid frame_index')
        index = int(raw_index[0])
        has_state = 'state' in arrays and 'mem' in arrays
        if index > 0 and not has_state:
            raise ValueError(f'stream state at frame {index} lacks its state/mem arrays')
        pose = arrays.get('reference_pose')
        if pose is not None and np.asarray(pose).shape != (4, 4):
            raise ValueError(f'reference_pose must be 4x4, got {np.asarray(pose).shape}')
        if has_state:
            self._set_backend_state(np.asarray(arrays['state'], np.float32),
                                    np.asarray(arrays['mem'], np.float32))
        else:
            self._reset_backend()
        self._frame_index = index
        self._reference_pose = None if pose is None else np.asarray(pose, np.float64).copy()

    def _backend_state(self) -> dict[str, np.ndarray]:
        """Return ``{'state', 'mem'}`` as float32 arrays, or {} before the first frame."""
        raise NotImplementedError

    def _set_backend_state(self, state: np.ndarray, mem: np.ndarray) -> None:
        """Install state and memory arrays; raise ValueError when their shapes differ."""
        raise NotImplementedError

    def _reset_backend(self) -> None:
        """Drop backend state (implemented by subclasses)."""
        raise NotImplementedError

    def _reinit_backend(self) -> None:
        """Set the state and memory to their initial values (implemented by subclasses)."""
        raise NotImplementedError

    def _run(
        self, img: np.ndarray, rays: Optional[np.ndarray], is_first: bool, update: bool
    ) -> dict[str, object]:
        """Run one step on a (1, 3, h, w) input; return numpy outputs and the token tensor."""
        raise NotImplementedError

    def _input_size(self, image: np.ndarray) -> SizeSpec:
        """Return the size spec used for ``image`` (subclasses may derive a default)."""
        if self.image_size is None:
            raise ValueError('image_size is not set')
        return self.image_size

    def step(
        self,
        image: np.ndarray,
        intrinsics: Optional[np.ndarray] = None,
        cam_to_world: Optional[np.ndarray] = None,
        update: bool = True,
    ) -> FrameGeometry:
        """Process one frame.

        Args:
            image: HxWx3 uint8 RGB.
            intrinsics: optional 3x3 intrinsics of ``image`` (pixels).
            cam_to_world: optional 4x4 known camera pose (metres). On the first frame
                after a reset it becomes the reference; later poses are taken relative
                to it (or, if the first frame had none, as already relative to the first
                frame). When a later frame has both ``intrinsics`` and ``cam_to_world``
                they are fed as a ray map (as in CUT3R training, the first frame never
                gets one). Backends without a ray-map input ignore them
                (``FrameGeometry.used_ray_map`` says which happened).
            update: write this frame into the state (official ``update`` gate); False
                queries the scene without changing it.

        Returns:
            The frame's :class:`FrameGeometry`.

        Raises:
            ValueError: bad image, intrinsics or pose shapes, or a preprocessed size
                the backend cannot take.
        """
        is_first = self._frame_index == 0
        img, transform = preprocess_image(
            image, self._input_size(image), self.resize_mode, self.patch_size
        )
        rays = None
        if is_first and cam_to_world is not None:
            reference = np.asarray(cam_to_world, dtype=np.float64).copy()
            if reference.shape != (4, 4):
                raise ValueError(f'cam_to_world must be 4x4, got {reference.shape}')
            self._reference_pose = reference
        elif intrinsics is not None and cam_to_world is not None and self.supports_ray_map:
            k = transform.apply_to_intrinsics(intrinsics)
            cam_to_ref = relative_pose(self._reference_pose, cam_to_world)
            rays = ray_map(k, cam_to_ref, transform.out_size)
        out = self._run(img, rays, is_first, update)
        self._frame_index += 1
        return FrameGeometry(
            pts_world=np.asarray(out['pts_world'], dtype=np.float32),
            conf=np.asarray(out['conf'], dtype=np.float32),
            pts_self=np.asarray(out['pts_self'], dtype=np.float32),
            conf_self=np.asarray(out['conf_self'], dtype=np.float32),
            pose=pose_encoding_to_matrix(np.asarray(out['camera_pose'])),
            tokens=out['tokens'],  # type: ignore[arg-type]
            image_size=transform.out_size,
            frame_index=self._frame_index - 1,
            used_ray_map=rays is not None,
            transform=transform,
        )


class Cut3rStream(StreamBase):
    """Stream frames through a PyTorch :class:`Cut3rModel`.

    Example::

        stream = Cut3rStream(load_cut3r('cut3r_512_dpt_4_64.pth'), image_size=512)
        for frame in frames:
            geo = stream.step(frame)
    """

    def __init__(
        self, model: Cut3rModel, image_size: SizeSpec = 512, resize_mode: str = 'crop'
    ) -> None:
        """Wrap ``model`` (put in eval mode).

        Args:
            model: the network (any device/dtype).
            image_size: see :func:`preprocess.preprocess_image`; ``(432, 432)`` with
                ``resize_mode='vlm3r'`` reproduces VLM-3R's input (the SigLIP-processed
                384x384 frame, resized bilinearly to 432x432).
            resize_mode: ``'crop'`` (official CUT3R), ``'stretch'`` (raw bilinear resize,
                what the tiny profile's small CUT3R was trained on) or ``'vlm3r'``.
        """
        super().__init__(image_size, resize_mode, model.config.patch_size)
        self.model = model.eval()
        self._state: Optional[torch.Tensor] = None
        self._mem: Optional[torch.Tensor] = None

    def _reset_backend(self) -> None:
        """Drop the state and memory tensors."""
        self._state = None
        self._mem = None

    def _reinit_backend(self) -> None:
        """Set the state and memory to the model's initial ones."""
        with torch.inference_mode():
            self._state, self._mem = self.model.init_state(1), self.model.init_mem(1)

    def _backend_state(self) -> dict[str, np.ndarray]:
        if self._state is None or self._mem is None:
            return {}
        return {'state': self._state.float().cpu().numpy(), 'mem': self._mem.float().cpu().numpy()}

    def _set_backend_state(self, state: np.ndarray, mem: np.ndarray) -> None:
        with torch.inference_mode():
            init_state, init_mem = self.model.init_state(1), self.model.init_mem(1)
            for name, value, like in (('state', state, init_state), ('mem', mem, init_mem)):
                if tuple(value.shape) != tuple(like.shape):
                    raise ValueError(f'stream {name} has shape {tuple(value.shape)}; this '
                                     f'model needs {tuple(like.shape)}')
            self._state = torch.from_numpy(state).to(init_state.device, init_state.dtype)
            self._mem = torch.from_numpy(mem).to(init_mem.device, init_mem.dtype)

    @property
    def state_nbytes(self) -> int:
        """Return the bytes held by the recurrent state and pose memory (0 after a
        ``'new_sequence'`` reset)."""
        return sum(t.numel() * t.element_size() for t in (self._state, self._mem) if t is not None)

    def _run(
        self, img: np.ndarray, rays: Optional[np.ndarray], is_first: bool, update: bool
    ) -> dict[str, object]:
        """Run ``model.step`` under inference mode and keep the new state."""
        model = self.model
        device = model.device
        with torch.inference_mode():
            if self._state is None or self._mem is None:
                self._state, self._mem = model.init_state(1), model.init_mem(1)
            out = model.step(
                torch.from_numpy(img).to(device),
                self._state,
                self._mem,
                is_first=torch.tensor([is_first], device=device),
                update=torch.tensor([update], device=device),
                ray_map=None if rays is None else torch.from_numpy(rays)[None].to(device),
            )
            self._state, self._mem = out.state, out.mem
            return {
                'pts_world': out.pts_world[0].float().cpu().numpy(),
                'conf': out.conf[0].float().cpu().numpy(),
                'pts_self': out.pts_self[0].float().cpu().numpy(),
                'conf_self': out.conf_self[0].float().cpu().numpy(),
                'camera_pose': out.camera_pose[0].double().cpu().numpy(),
                'tokens': out.tokens[0],
            }
