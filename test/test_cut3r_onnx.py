"""ONNX export of the CUT3R step: numerical agreement with PyTorch over a stream.

Measured on the tiny DPT profile (CPU, 8 streamed frames with ray maps, a frozen
update and a reset): max abs difference 1.4e-7 on world points, 4.8e-7 on
confidences, 1.2e-6 on the pose matrix, 3.2e-6 on tokens, 1.1e-6 on the state and
2.6e-6 on the pose memory; nothing accumulates over the stream. The full 512 DPT size
(random weights, 432x432, 2 frames, checked once by hand: the export takes ~2 min and
3 GB) gave 2.7e-7 on points and 4e-6 on tokens and pose. The tolerance below is 1e-4.
Export takes ~15 s even at the tiny size (torch.export tracing), hence ``slow``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

from vlm3r_ros.models.cut3r.config import Cut3rConfig  # noqa: E402
from vlm3r_ros.models.cut3r.model import Cut3rModel  # noqa: E402
from vlm3r_ros.models.cut3r.onnx_backend import OnnxCut3rStream, export_onnx  # noqa: E402
from vlm3r_ros.models.cut3r.stream import Cut3rStream, GeometryEncoder  # noqa: E402

pytestmark = pytest.mark.slow

TOLERANCE = 1e-4


@pytest.fixture(scope='module')
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cut3rModel, Path]:
    """A tiny DPT model and its step graph (with ray-map inputs) exported once."""
    torch.manual_seed(0)
    model = Cut3rModel(Cut3rConfig.tiny('dpt')).eval()
    path = export_onnx(model, tmp_path_factory.mktemp('onnx') / 'cut3r_step.onnx', (224, 224),
                       with_ray_map=True)
    return model, path


def _diff(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    a = a.float().numpy() if isinstance(a, torch.Tensor) else a
    b = b.float().numpy() if isinstance(b, torch.Tensor) else b
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def test_onnx_stream_matches_pytorch(exported: tuple[Cut3rModel, Path]) -> None:
    model, path = exported
    torch_stream = Cut3rStream(model, image_size=(224, 224), resize_mode='stretch')
    onnx_stream = OnnxCut3rStream(path, providers=['CPUExecutionProvider'])
    assert isinstance(onnx_stream, GeometryEncoder)
    assert onnx_stream.input_size == (224, 224) and onnx_stream.with_ray_map
    rng = np.random.default_rng(0)
    k = np.array([[260.0, 0, 160], [0, 260.0, 120], [0, 0, 1]])
    worst: dict[str, float] = {}
    plan = [  # (reset before, ray map, update)
        (False, False, True), (False, True, True), (False, False, True), (False, False, False),
        (False, True, True), (True, False, True), (False, True, True), (False, False, True),
    ]
    for i, (reset, rays, update) in enumerate(plan):
        if reset:
            torch_stream.reset()
            onnx_stream.reset()
        image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        pose = np.eye(4)
        pose[:3, 3] = [0.1 * i, 0.0, 0.05 * i]
        kwargs = {'intrinsics': k, 'cam_to_world': pose} if rays else {}
        a = torch_stream.step(image, update=update, **kwargs)
        b = onnx_stream.step(image, update=update, **kwargs)
        assert a.used_ray_map == b.used_ray_map
        assert a.frame_index == b.frame_index and a.image_size == b.image_size
        pairs = {
            'pts_world': (a.pts_world, b.pts_world), 'conf': (a.conf, b.conf),
            'pts_self': (a.pts_self, b.pts_self), 'conf_self': (a.conf_self, b.conf_self),
            'pose': (a.pose, b.pose), 'tokens': (a.tokens, b.tokens),
            'state': (torch_stream._state[0], onnx_stream._state[0]),
            'mem': (torch_stream._mem[0], onnx_stream._mem[0]),
        }
        for name, (x, y) in pairs.items():
            worst[name] = max(worst.get(name, 0.0), _diff(x, y))
    assert any(a for _, a, _ in plan)  # ray maps were exercised
    assert all(v < TOLERANCE for v in worst.values()), worst
    assert onnx_stream.state_nbytes == torch_stream.state_nbytes


def test_both_resets_match_pytorch_in_onnx(exported: tuple[Cut3rModel, Path]) -> None:
    """'reference' (state and memory re-initialised, pose read from memory) and
    'new_sequence' (learnt pose token) give the PyTorch stream's outputs in ONNX too."""
    model, path = exported
    torch_stream = Cut3rStream(model, image_size=(224, 224), resize_mode='stretch')
    onnx_stream = OnnxCut3rStream(path, providers=['CPUExecutionProvider'])
    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(5)]
    got = []
    for i, frame in enumerate(frames):
        if i == 2:
            torch_stream.reset(mode='reference')
            onnx_stream.reset(mode='reference')
            # The graph's initial state and memory, read out of it, are the model's.
            assert _diff(onnx_stream._state[0], model.init_state(1)[0].detach()) < TOLERANCE
            assert _diff(onnx_stream._mem[0], model.init_mem(1)[0].detach()) < TOLERANCE
        if i == 4:
            torch_stream.reset(mode='new_sequence')
            onnx_stream.reset(mode='new_sequence')
        a, b = torch_stream.step(frame), onnx_stream.step(frame)
        assert a.frame_index == b.frame_index
        assert _diff(a.tokens, b.tokens) < TOLERANCE and _diff(a.pts_world, b.pts_world) < TOLERANCE
        got.append(b)
    assert [g.frame_index for g in got] == [0, 1, 2, 3, 0]


def test_state_actually_evolves_in_onnx(exported: tuple[Cut3rModel, Path]) -> None:
    _, path = exported
    stream = OnnxCut3rStream(path)
    rng = np.random.default_rng(1)
    stream.step(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))
    s1 = stream._state.copy()
    stream.step(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))
    s2 = stream._state.copy()
    assert not np.allclose(s1, s2)
    stream.step(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), update=False)
    assert np.array_equal(s2, stream._state)  # the update gate held the state


def test_onnx_metadata_and_size_check(exported: tuple[Cut3rModel, Path]) -> None:
    import onnx

    model, path = exported
    proto = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta['cut3r_input_size'] == '224x224'
    assert Cut3rConfig.from_official_string(meta['cut3r_config']) == model.config
    stream = OnnxCut3rStream(path, image_size=512, resize_mode='crop')
    with pytest.raises(ValueError, match='ONNX graph takes 224x224'):
        stream.step(np.zeros((480, 640, 3), dtype=np.uint8))


def test_export_rejects_bad_inputs(exported: tuple[Cut3rModel, Path], tmp_path: Path) -> None:
    model, _ = exported
    with pytest.raises(ValueError, match='patch size'):
        export_onnx(model, tmp_path / 'x.onnx', (100, 100))
    half = Cut3rModel(Cut3rConfig.tiny('dpt')).to(torch.bfloat16)
    with pytest.raises(ValueError, match='float32'):
        export_onnx(half, tmp_path / 'y.onnx', (224, 224))


def test_exported_state_continues_the_sequence_in_both_backends(
        exported: tuple[Cut3rModel, Path]) -> None:
    """A saved scene's stream state: a new stream that imports it gives the next frame
    exactly as the stream that went on; a state of the wrong shape is refused."""
    model, path = exported
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(4)]
    for make in (lambda: Cut3rStream(model, image_size=(224, 224), resize_mode='stretch'),
                 lambda: OnnxCut3rStream(path, providers=['CPUExecutionProvider'])):
        first, second = make(), make()
        for frame in frames[:3]:
            first.step(frame)
        second.import_state(first.export_state())
        a, b = first.step(frames[3]), second.step(frames[3])
        assert a.frame_index == b.frame_index == 3
        assert _diff(a.pts_world, b.pts_world) < 1e-5 and _diff(a.pose, b.pose) < 1e-6
        bad = dict(first.export_state(), state=np.zeros((1, 2, 3), np.float32))
        with pytest.raises(ValueError, match='shape'):
            second.import_state(bad)
        assert second.frame_index == 4  # a refused import leaves the stream as it was
