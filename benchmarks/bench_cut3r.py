"""Benchmark of the streaming CUT3R geometry encoder (PyTorch and ONNX Runtime).

Always: the tiny profile on CPU, PyTorch vs ONNX Runtime in the same run (frames/s,
ratio, export time) and the memory held by the recurrent state. With CUDA: the full
``cut3r_512_dpt_4_64`` size with random weights in float16 and bfloat16 at 432x432
(VLM-3R's input) and 512x384. Nothing is downloaded. Usage:
    python benchmarks/bench_cut3r.py [--quick]
``run(quick)`` returns a Markdown section.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, '') and str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from vlm3r_ros.models.cut3r.config import Cut3rConfig  # noqa: E402
from vlm3r_ros.models.cut3r.model import Cut3rModel  # noqa: E402
from vlm3r_ros.models.cut3r.stream import Cut3rStream, StreamBase  # noqa: E402


def _frames(n: int, hw: tuple[int, int] = (480, 640)) -> list[np.ndarray]:
    """Return ``n`` random RGB frames."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for _ in range(n)]


def _sync() -> None:
    """Wait for queued GPU work so wall times are real."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _fps(stream: StreamBase, frames: list[np.ndarray], warmup: int = 2) -> tuple[float, float]:
    """Return (frames/s, median ms per frame) of a stream after ``warmup`` frames."""
    stream.reset()
    for frame in frames[:warmup]:
        stream.step(frame)
    times = []
    for frame in frames[warmup:]:
        _sync()
        start = time.perf_counter()
        stream.step(frame)
        _sync()
        times.append(time.perf_counter() - start)
    return len(times) / sum(times), 1000 * statistics.median(times)


def _state_bytes(config: Cut3rConfig, bytes_per_value: int) -> int:
    """Return the bytes of one stream's state + pose memory for ``config``."""
    values = (config.state_size * config.dec_embed_dim
              + config.local_mem_size * 2 * config.dec_embed_dim)
    return values * bytes_per_value


def _tiny_section(quick: bool) -> list[str]:
    """Measure the tiny profile on CPU with both backends."""
    n = 6 if quick else 20
    out = ['### tiny profile, CPU, float32, 224x224 input (640x480 frames, crop to 224)', '']
    torch.manual_seed(0)
    model = Cut3rModel(Cut3rConfig.tiny('dpt')).eval()
    frames = _frames(n + 2)
    torch_stream = Cut3rStream(model, image_size=224)
    torch_fps, torch_ms = _fps(torch_stream, frames)
    rows = [('PyTorch (eager)', torch_fps, torch_ms)]
    try:
        from vlm3r_ros.models.cut3r.onnx_backend import OnnxCut3rStream, export_onnx
    except ImportError:  # onnxruntime/onnxscript missing
        OnnxCut3rStream = None  # type: ignore[assignment, misc]
    if OnnxCut3rStream is not None:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            path = export_onnx(model, Path(tmp) / 'cut3r_tiny.onnx', (224, 224))
            export_s = time.perf_counter() - start
            onnx_stream = OnnxCut3rStream(path, image_size=224, resize_mode='crop',
                                          providers=['CPUExecutionProvider'])
            onnx_fps, onnx_ms = _fps(onnx_stream, frames)
            rows.append(('ONNX Runtime (CPU EP)', onnx_fps, onnx_ms))
    out += ['| backend | frames/s | median ms/frame |', '|---|---:|---:|']
    out += [f'| {name} | {fps:.1f} | {ms:.1f} |' for name, fps, ms in rows]
    out.append('')
    if len(rows) == 2:
        out.append(f'- ONNX Runtime / PyTorch throughput ratio: {rows[1][1] / rows[0][1]:.2f}x '
                   f'(export of the step graph took {export_s:.1f} s)')
    else:
        out.append('- ONNX Runtime not installed: ONNX measurements skipped.')
    out.append(f'- {len(frames) - 2} timed frames after 2 warm-up frames, '
               f'{torch.get_num_threads()} torch threads.')
    out.append(f'- state + pose memory per stream: {torch_stream.state_nbytes / 1024:.1f} KiB '
               '(constant over the stream)')
    return out


def _full_size_section(
    config: Cut3rConfig, device: torch.device, dtypes: tuple[torch.dtype, ...], quick: bool
) -> list[str]:
    """Measure a model of ``config`` with random weights on ``device`` (the GPU in ``run``)."""
    cuda = device.type == 'cuda'
    n = 10 if quick else 40
    name = torch.cuda.get_device_name(device) if cuda else 'CPU'
    out = [f'### cut3r_512_dpt_4_64 size on {name}, random weights', '']
    out += ['| dtype | input | frames/s | median ms/frame | peak GPU memory |',
            '|---|---|---:|---:|---:|']
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.device(device):
        model = Cut3rModel(config).eval()
    build_s = time.perf_counter() - start
    for dtype in dtypes:
        model.to_inference_dtype(dtype)
        for label, size, mode in (('432x432 (VLM-3R)', (432, 432), 'stretch'),
                                  ('512x384', 512, 'crop')):
            stream = Cut3rStream(model, image_size=size, resize_mode=mode)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            fps, ms = _fps(stream, _frames(n + 3), warmup=3)
            peak = (f'{torch.cuda.max_memory_allocated(device) / 2 ** 30:.2f} GiB' if cuda
                    else 'n/a')
            out.append(f'| {str(dtype).replace("torch.", "")} | {label} | {fps:.1f} | {ms:.1f} | '
                       f'{peak} |')
    out.append('')
    out.append(f'- {sum(p.numel() for p in model.parameters()):,} parameters; built on the device '
               f'in {build_s:.1f} s; head kept in float32; {n} timed frames after 3 warm-up.')
    del model
    if cuda:
        torch.cuda.empty_cache()
    return out


def run(quick: bool = False) -> str:
    """Run the benchmark and return a Markdown section starting with '## '."""
    out = ['## CUT3R streaming geometry encoder', '']
    out += _tiny_section(quick)
    out.append('')
    full = Cut3rConfig.official_512_dpt()
    out.append(f'Full-size state + pose memory per stream (768 tokens x 768 + 256 slots x 1536): '
               f'{_state_bytes(full, 4) / 2 ** 20:.2f} MiB in float32, '
               f'{_state_bytes(full, 2) / 2 ** 20:.2f} MiB in 16-bit.')
    out.append('')
    if torch.cuda.is_available():
        out += _full_size_section(full, torch.device('cuda'),
                                  (torch.float16, torch.bfloat16), quick)
    else:
        out.append('_No CUDA device: the full-size GPU measurements were skipped._')
    out.append('')
    return '\n'.join(out)


def main() -> None:
    """Print the Markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='fewer frames')
    print(run(quick=parser.parse_args().quick))


if __name__ == '__main__':
    main()
