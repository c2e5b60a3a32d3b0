"""ONNX export of the per-frame CUT3R step and an ONNX Runtime stream.

The exported graph is exactly :meth:`Cut3rModel.step` for one frame (batch 1, fixed
input size):

inputs
    ``image`` (1, 3, H, W) float32 in [-1, 1]; ``state`` (1, S, D) float32;
    ``mem`` (1, M, 2D) float32; ``is_first`` (1,) bool; ``update`` (1,) bool; and, when
    exported ``with_ray_map``, ``ray_map`` (1, 6, H, W) float32 and ``use_ray`` (1,)
    float32 (0 or 1).
outputs
    ``pts_self`` (1, H, W, 3), ``conf_self`` (1, H, W), ``pts_world`` (1, H, W, 3),
    ``conf`` (1, H, W), ``camera_pose`` (1, 7), ``tokens`` (1, 1+P, D),
    ``new_state`` (1, S, D), ``new_mem`` (1, M, 2D).

The initial state and memory are constants inside the graph, selected by
``is_first``, so the stream only carries ``new_state``/``new_mem`` from one call to the
next. A ``'reference'`` reset (state and memory re-initialised, pose still read from
memory) reads those constants out once by running the graph with ``is_first`` and no
``update`` (the graph then returns its initial state and memory unchanged). RoPE angles
are computed as ``position * inv_freq`` in the graph, so the pose token's position
(-1, -1) is exact (a table lookup would wrap around to the last row in ONNX ``Gather``
and silently corrupt the pose token and, through it, the state).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from vlm3r_ros.models.cut3r.model import Cut3rModel
from vlm3r_ros.models.cut3r.preprocess import SizeSpec
from vlm3r_ros.models.cut3r.stream import StreamBase

INPUT_NAMES = ('image', 'state', 'mem', 'is_first', 'update')
RAY_INPUT_NAMES = ('ray_map', 'use_ray')
OUTPUT_NAMES = (
    'pts_self', 'conf_self', 'pts_world', 'conf', 'camera_pose', 'tokens', 'new_state', 'new_mem',
)


class Cut3rStepGraph(nn.Module):
    """Tensor-in, tuple-out wrapper of :meth:`Cut3rModel.step` for export."""

    def __init__(self, model: Cut3rModel, with_ray_map: bool = False) -> None:
        """Wrap ``model``; ``with_ray_map`` adds the ``ray_map``/``use_ray`` inputs."""
        super().__init__()
        self.model = model
        self.with_ray_map = with_ray_map

    def forward(
        self,
        image: torch.Tensor,
        state: torch.Tensor,
        mem: torch.Tensor,
        is_first: torch.Tensor,
        update: torch.Tensor,
        ray_map: Optional[torch.Tensor] = None,
        use_ray: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, ...]:
        """Return the step outputs in ``OUTPUT_NAMES`` order."""
        out = self.model.step(
            image, state, mem, is_first, update,
            ray_map=ray_map if self.with_ray_map else None,
            use_ray=use_ray if self.with_ray_map else None,
        )
        return (out.pts_self, out.conf_self, out.pts_world, out.conf, out.camera_pose,
                out.tokens, out.state, out.mem)


def export_onnx(
    model: Cut3rModel,
    path: Union[str, Path],
    input_size: tuple[int, int],
    with_ray_map: bool = False,
    opset: int = 18,
    optimize: bool = True,
) -> Path:
    """Export the per-frame step of a float32 ``model`` to ONNX.

    Args:
        model: float32 model (cast a copy with ``.float()`` first if needed).
        path: destination ``.onnx``; weights over 2 GB go to an external data file
            next to it.
        input_size: ``(h, w)`` model input size (multiples of the patch size).
        with_ray_map: add the ``ray_map``/``use_ray`` inputs (ray-map encoder in graph).
        opset: ONNX opset.
        optimize: run the exporter's graph optimiser (slower export; ONNX Runtime
            optimises again when it loads the graph either way).

    Returns:
        The path written.

    Raises:
        ValueError: if the model is not float32 or the size is not patch-aligned.
    """
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise ValueError('export_onnx needs a float32 model')
    h, w = input_size
    p = model.config.patch_size
    if h % p or w % p:
        raise ValueError(f'input size {h}x{w} is not a multiple of the patch size {p}')
    path = Path(path)
    model = model.eval()
    device = model.device
    args: list[torch.Tensor] = [
        torch.zeros(1, 3, h, w, device=device),
        model.init_state(1).detach(),
        model.init_mem(1).detach(),
        torch.tensor([True], device=device),
        torch.tensor([True], device=device),
    ]
    names = list(INPUT_NAMES)
    if with_ray_map:
        args += [torch.zeros(1, 6, h, w, device=device), torch.ones(1, device=device)]
        names += list(RAY_INPUT_NAMES)
    # The exporter logs per-op registration warnings (e.g. torchvision ops); keep quiet.
    onnx_logger = logging.getLogger('torch.onnx')
    old_level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter('ignore')
            program = torch.onnx.export(
                Cut3rStepGraph(model, with_ray_map), tuple(args), input_names=names,
                output_names=list(OUTPUT_NAMES), opset_version=opset, dynamo=True,
                verbose=False, optimize=optimize,
            )
    finally:
        onnx_logger.setLevel(old_level)
    program.model.metadata_props['cut3r_config'] = model.config.to_official_string()
    program.model.metadata_props['cut3r_input_size'] = f'{h}x{w}'
    program.save(str(path))
    return path


def default_providers() -> list[str]:
    """Return ``['CUDAExecutionProvider', 'CPUExecutionProvider']`` when CUDA is available."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if 'CUDAExecutionProvider' in available:
        return ['CUDAExecutionProvider', 'CPUExecutionProvider']
    return ['CPUExecutionProvider']


class OnnxCut3rStream(StreamBase):
    """Stream frames through an exported step graph on ONNX Runtime.

    Same ``reset(mode)``/``step()`` API and outputs as :class:`Cut3rStream`; ``tokens``
    is a CPU tensor.
    """

    def __init__(
        self,
        onnx_path: Union[str, Path],
        image_size: Optional[SizeSpec] = None,
        resize_mode: str = 'stretch',
        providers: Optional[Sequence[str]] = None,
        patch_size: int = 16,
    ) -> None:
        """Open an ONNX Runtime session.

        Args:
            onnx_path: graph written by :func:`export_onnx`.
            image_size: preprocessing size; None uses the graph's input size.
            resize_mode: ``'crop'``, ``'stretch'`` or ``'vlm3r'`` (see
                :func:`preprocess.preprocess_image`); the preprocessed image must have
                the graph's input size.
            providers: ONNX Runtime providers (default: CUDA when available, then CPU).
            patch_size: patch size of the exported model.
        """
        import onnxruntime as ort

        super().__init__(image_size, resize_mode, patch_size)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(onnx_path), sess_options=options,
            providers=list(providers) if providers is not None else default_providers(),
        )
        shapes = {i.name: i.shape for i in self.session.get_inputs()}
        missing = [n for n in INPUT_NAMES if n not in shapes]
        if missing:
            raise ValueError(f'{onnx_path}: not a CUT3R step graph (missing inputs {missing})')
        self.input_size: tuple[int, int] = (int(shapes['image'][2]), int(shapes['image'][3]))
        self.with_ray_map = all(n in shapes for n in RAY_INPUT_NAMES)
        self.supports_ray_map = self.with_ray_map
        self._state_shape = tuple(int(d) for d in shapes['state'])
        self._mem_shape = tuple(int(d) for d in shapes['mem'])
        self._state: Optional[np.ndarray] = None
        self._mem: Optional[np.ndarray] = None
        self._initial: Optional[tuple[np.ndarray, np.ndarray]] = None

    @property
    def providers(self) -> list[str]:
        """Return the providers the session actually uses."""
        return self.session.get_providers()

    @property
    def state_nbytes(self) -> int:
        """Return the bytes held by the recurrent state and pose memory (0 after a
        ``'new_sequence'`` reset)."""
        return sum(a.nbytes for a in (self._state, self._mem) if a is not None)

    def _input_size(self, image: np.ndarray) -> SizeSpec:
        """Return ``image_size`` or, when unset, the graph's input size."""
        return self.input_size if self.image_size is None else self.image_size

    def _reset_backend(self) -> None:
        """Drop the state and memory arrays."""
        self._state = None
        self._mem = None

    def _reinit_backend(self) -> None:
        """Set the state and memory to the graph's initial ones (read out once)."""
        if self._initial is None:
            h, w = self.input_size
            feeds: dict[str, np.ndarray] = {
                'image': np.zeros((1, 3, h, w), np.float32),
                'state': np.zeros(self._state_shape, np.float32),
                'mem': np.zeros(self._mem_shape, np.float32),
                'is_first': np.array([True]),
                'update': np.array([False]),
            }
            if self.with_ray_map:
                feeds['ray_map'] = np.zeros((1, 6, h, w), np.float32)
                feeds['use_ray'] = np.zeros(1, np.float32)
            state, mem = self.session.run(['new_state', 'new_mem'], feeds)
            self._initial = (state, mem)
        self._state, self._mem = self._initial[0].copy(), self._initial[1].copy()

    def _backend_state(self) -> dict[str, np.ndarray]:
        if self._state is None or self._mem is None:
            return {}
        return {'state': self._state.copy(), 'mem': self._mem.copy()}

    def _set_backend_state(self, state: np.ndarray, mem: np.ndarray) -> None:
        for name, value, shape in (('state', state, self._state_shape),
                                   ('mem', mem, self._mem_shape)):
            if tuple(value.shape) != shape:
                raise ValueError(f'stream {name} has shape {tuple(value.shape)}; this graph '
                                 f'needs {shape}')
        self._state, self._mem = state.copy(), mem.copy()

    def _run(
        self, img: np.ndarray, rays: Optional[np.ndarray], is_first: bool, update: bool
    ) -> dict[str, object]:
        """Run the session once and keep the new state."""
        h, w = img.shape[-2:]
        if (h, w) != self.input_size:
            raise ValueError(
                f'preprocessed image is {h}x{w} but the ONNX graph takes '
                f'{self.input_size[0]}x{self.input_size[1]}; adjust image_size/resize_mode '
                'or export for this size'
            )
        if self._state is None or self._mem is None:
            # Ignored by the graph on the first frame (it selects its initial state).
            self._state = np.zeros(self._state_shape, dtype=np.float32)
            self._mem = np.zeros(self._mem_shape, dtype=np.float32)
        feeds: dict[str, np.ndarray] = {
            'image': img,
            'state': self._state,
            'mem': self._mem,
            'is_first': np.array([is_first], dtype=np.bool_),
            'update': np.array([update], dtype=np.bool_),
        }
        if self.with_ray_map:
            rays_in = rays if rays is not None else np.zeros((6, h, w), np.float32)
            feeds['ray_map'] = rays_in[None]
            feeds['use_ray'] = np.array([1.0 if rays is not None else 0.0], dtype=np.float32)
        outs = dict(zip(OUTPUT_NAMES, self.session.run(list(OUTPUT_NAMES), feeds)))
        self._state, self._mem = outs['new_state'], outs['new_mem']
        return {
            'pts_world': outs['pts_world'][0],
            'conf': outs['conf'][0],
            'pts_self': outs['pts_self'][0],
            'conf_self': outs['conf_self'][0],
            'camera_pose': outs['camera_pose'][0].astype(np.float64),
            'tokens': torch.from_numpy(outs['tokens'][0]),
        }
