"""CUT3R streaming-step runners for ``benchmarks/gpu_realsize.py``.

Each runner advances one stream by one frame per call, carrying the recurrent state and the
pose memory from one call to the next as the node does, so a timed loop measures the
steady-state step (``is_first`` false after the first call):

* ``eager``: ``Cut3rModel.step`` on device tensors (no preprocessing, no host copies);
* ``compiled``: the same step through ``torch.compile`` (inductor by default);
* ``graph`` / ``compiled_graph``: one CUDA graph captured around the eager / compiled step,
  replayed per frame with the new state copied back into the graph's input buffers;
* ``stream``: the node's path, ``Cut3rStream.step`` on an HxWx3 uint8 frame (NumPy/PIL
  preprocessing, host copies of the point maps);
* ``onnx``: ``OnnxCut3rStream`` on the ONNX Runtime CUDA execution provider, where that
  provider is installed.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlm3r_ros.models.cut3r.model import Cut3rModel
from vlm3r_ros.models.cut3r.onnx_backend import Cut3rStepGraph
from vlm3r_ros.models.cut3r.stream import Cut3rStream

StepFn = Callable[..., tuple[torch.Tensor, ...]]
# Positions of the new state and memory in Cut3rStepGraph's outputs (onnx_backend.OUTPUT_NAMES).
_STATE, _MEM = 6, 7


def step_input(model: Cut3rModel, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Return one normalised (1, 3, h, w) float32 image in [-1, 1] on the model's device."""
    gen = torch.Generator(device=model.device).manual_seed(seed)
    return torch.rand(1, 3, *size, device=model.device, generator=gen) * 2 - 1


class TensorStepper:
    """Advance one stream per call through ``fn`` (Cut3rStepGraph-like), state carried."""

    def __init__(self, model: Cut3rModel, fn: StepFn, image: torch.Tensor) -> None:
        """Start a stream of ``model`` whose frames are all ``image``."""
        device = model.device
        self.fn = fn
        self.image = image
        with torch.inference_mode():
            self.state = model.init_state(1).clone()
            self.mem = model.init_mem(1).clone()
        self.first = torch.tensor([True], device=device)
        self.later = torch.tensor([False], device=device)
        self.update = torch.tensor([True], device=device)
        self.calls = 0

    def __call__(self) -> tuple[torch.Tensor, ...]:
        """Process one frame; return the step outputs."""
        with torch.inference_mode():
            out = self.fn(self.image, self.state, self.mem,
                          self.first if self.calls == 0 else self.later, self.update)
        self.state, self.mem = out[_STATE], out[_MEM]
        self.calls += 1
        return out


class GraphStepper:
    """One CUDA graph of a step, replayed per frame; the new state is copied back in."""

    def __init__(self, model: Cut3rModel, fn: StepFn, image: torch.Tensor,
                 warmup: int = 3) -> None:
        """Warm ``fn`` up on a side stream, then capture it (state inputs are static buffers)."""
        device = model.device
        with torch.inference_mode():
            self.image = image.clone()
            self.state = model.init_state(1).clone()
            self.mem = model.init_mem(1).clone()
            self.later = torch.tensor([False], device=device)
            self.update = torch.tensor([True], device=device)
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    fn(self.image, self.state, self.mem, self.later, self.update)
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = fn(self.image, self.state, self.mem, self.later, self.update)

    def __call__(self) -> tuple[torch.Tensor, ...]:
        """Replay the graph for one frame and feed its new state to the next replay."""
        self.graph.replay()
        with torch.inference_mode():
            self.state.copy_(self.out[_STATE])
            self.mem.copy_(self.out[_MEM])
        return self.out


def eager_fn(model: Cut3rModel) -> StepFn:
    """Return the plain (eager) step as a tensor-in, tuple-out callable."""
    return Cut3rStepGraph(model).eval()


def compiled_fn(model: Cut3rModel, backend: str = 'inductor') -> StepFn:
    """Return the step through ``torch.compile`` (static shapes; compiled on first call)."""
    return torch.compile(Cut3rStepGraph(model).eval(), backend=backend, dynamic=False)


class StreamStepper:
    """The node's path: ``Cut3rStream.step`` on one HxWx3 uint8 frame per call."""

    def __init__(self, model: Cut3rModel, size: tuple[int, int], resize_mode: str,
                 frame: np.ndarray) -> None:
        """Open a stream of ``model`` at ``size`` fed ``frame`` every call."""
        self.stream = Cut3rStream(model, image_size=size, resize_mode=resize_mode)
        self.frame = frame

    def __call__(self) -> Any:
        """Process one frame; return its FrameGeometry."""
        return self.stream.step(self.frame)


def onnx_cuda_available() -> tuple[bool, str]:
    """Return (whether ONNX Runtime has its CUDA execution provider, why not if it has none)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return False, f'onnxruntime not importable: {exc}'
    providers = ort.get_available_providers()
    if 'CUDAExecutionProvider' not in providers:
        return False, (f'onnxruntime {ort.__version__} has no CUDAExecutionProvider '
                       f'(providers: {providers}; the CUDA EP ships in onnxruntime-gpu)')
    return True, ''


class OnnxStepper:
    """``OnnxCut3rStream`` on the CUDA EP (float32 export of a copy of the model)."""

    def __init__(self, model: Cut3rModel, size: tuple[int, int], resize_mode: str,
                 frame: np.ndarray, workdir: Path | None = None) -> None:
        """Export a float32 copy of ``model`` at ``size`` and open a CUDA-EP session."""
        from vlm3r_ros.models.cut3r.onnx_backend import OnnxCut3rStream, export_onnx
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory()
        root = Path(workdir if workdir is not None else self._tmp.name)
        fp32 = copy.deepcopy(model).float()
        self.path = export_onnx(fp32, root / 'cut3r_step.onnx', size)
        del fp32
        if model.device.type == 'cuda':
            torch.cuda.empty_cache()
        self.stream = OnnxCut3rStream(self.path, image_size=size, resize_mode=resize_mode,
                                      providers=['CUDAExecutionProvider',
                                                 'CPUExecutionProvider'])
        self.providers = self.stream.providers
        self.frame = frame

    def __call__(self) -> Any:
        """Process one frame; return its FrameGeometry."""
        return self.stream.step(self.frame)

    def close(self) -> None:
        """Drop the session and the exported files."""
        self.stream = None  # type: ignore[assignment]
        if self._tmp is not None:
            self._tmp.cleanup()


def head_flops(model: Cut3rModel, image: torch.Tensor) -> tuple[int | None, int | None]:
    """Return (FLOPs of one whole step, FLOPs of its float32 DPT/linear head) as counted.

    The head runs in float32 whatever the backbone dtype, so its share of the floor is taken
    at the float32 (TF32) matmul rate. (None, None) when the counter is unavailable.
    """
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None, None
    stepper = TensorStepper(model, eager_fn(model), image)
    stepper()  # the first frame takes the learnt pose token; count a steady-state one
    try:
        with FlopCounterMode(display=False) as counter:
            stepper()
    except Exception:  # noqa: BLE001 - counting aid only
        return None, None
    total = int(counter.get_total_flops())
    head = 0
    for name, ops in counter.get_flop_counts().items():
        if name.endswith('downstream_head'):
            head = max(head, int(sum(ops.values())))
    return total, head
