"""Benchmark of the VLM-3R fused LMM: per-frame encoding, answer latency, prefix KV reuse.

Runs the tiny profile on CPU (always) and, when CUDA is available, the real 7B sizes with
random bf16 weights (built directly on the GPU, nothing downloaded). Usage:
    python benchmarks/bench_vlm3r.py [--quick]
`run(quick)` returns a Markdown section.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, '') and str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from vlm3r_ros.models.profiles import Profile, get_profile  # noqa: E402
from vlm3r_ros.models.vlm3r.model import Vlm3rModel  # noqa: E402

QUESTION = ('These are frames of a video.\nMeasuring from the closest point of each object, '
            'what is the direct distance between the bed and the tv (in meters)?\n'
            'Please answer the question using a single word or phrase.')
FOLLOW_UP = ('These are frames of a video.\nHow many chair(s) are in this room?\n'
             'Please answer the question using a single word or phrase.')


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work so wall times are real."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    """Return the seconds `fn` takes (GPU-synchronised)."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _bench_profile(model: Vlm3rModel, frame_counts: tuple[int, ...], repeats: int) -> list[str]:
    """Measure one model; return Markdown lines (a bullet list and a table)."""
    prof: Profile = model.profile
    device = model.device
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    generator = torch.Generator().manual_seed(0)
    geometry = torch.randn(prof.geometry_num_tokens, prof.geometry_dim, generator=generator)
    points = rng.uniform(-4, 4, (480, 640, 3)).astype(np.float32)

    def encode() -> torch.Tensor:
        return model.encode_frame(image, geometry, points)

    encode()  # warm-up (kernels, allocator)
    encode_times = [_timed(encode, device) for _ in range(max(4, 2 * repeats))]
    frame = encode()
    frame_bytes = frame.numel() * frame.element_size()
    frames_all = [encode() for _ in range(max(frame_counts))]

    lines = [
        f'- encode_frame (SigLIP + {prof.fusion} fusion + projector + pooling + newlines), '
        f'480x640 input: **{1000 * statistics.median(encode_times):.1f} ms/frame** (median of '
        f'{len(encode_times)})',
        f'- cached visual tokens per frame: {tuple(frame.shape)} '
        f'{str(frame.dtype).replace("torch.", "")}'
        f' = **{frame_bytes / 1024:.1f} KiB/frame**',
        '',
        '| frames | visual tokens | first question (prefix miss) | repeated question (prefix hit) '
        '| new question, same frames (hit) | prefilled tokens miss / hit | new tokens '
        '| prefix KV per frame |',
        '|---:|---:|---:|---:|---:|---:|---:|---:|',
    ]
    for count in frame_counts:
        frames = frames_all[:count]
        firsts, repeats_t, follow = [], [], []
        stats_miss = stats_hit = None
        kv_bytes = 0
        for _ in range(repeats):
            model.clear_cache()
            firsts.append(_timed(lambda: model.answer(QUESTION, frames), device))
            stats_miss = model.last_stats
            kv_bytes = model.cache_info()['bytes']
            repeats_t.append(_timed(lambda: model.answer(QUESTION, frames), device))
            stats_hit = model.last_stats
            follow.append(_timed(lambda: model.answer(FOLLOW_UP, frames), device))
        assert stats_miss is not None and stats_hit is not None and stats_hit.prefix_hit
        lines.append(
            f'| {count} | {count * prof.tokens_per_frame} '
            f'| {1000 * statistics.median(firsts):.1f} ms '
            f'| {1000 * statistics.median(repeats_t):.1f} ms '
            f'| {1000 * statistics.median(follow):.1f} ms '
            f'| {stats_miss.prefilled_tokens} / {stats_hit.prefilled_tokens} '
            f'| {stats_hit.generated_tokens} | {kv_bytes / count / 1024:.1f} KiB |')
    model.clear_cache()
    return lines


def run(quick: bool = False) -> str:
    """Run the benchmark and return a Markdown section starting with '## '."""
    repeats = 1 if quick else 3
    counts = (8, 16, 32)
    out = ['## VLM-3R fused LMM (encode_frame, answer, prefix KV reuse)', '']
    out.append(f'Greedy decoding, max 16 new tokens, random weights (answers are meaningless; '
               f'the number of new tokens is reported). Median of {repeats} run(s).')
    out.append('')
    # The tiny model's ops are far too small to gain from intra-op threads, and on a shared
    # 2-core machine a 2-thread pool stalls badly under contention: measure it single-threaded.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        tiny = Vlm3rModel.from_profile('tiny')
        out.append(f'### tiny profile, CPU (1 thread), float32 '
                   f'(built in {time.perf_counter() - start:.2f} s)')
        out.append('')
        out.extend(_bench_profile(tiny, counts, repeats))
        out.append('')
        pe_model = Vlm3rModel.from_profile('tiny', fusion='position_encoding')
        out.append('### tiny profile, Video-3D LLM position-encoding fusion (1 thread)')
        out.append('')
        out.extend(_bench_profile(pe_model, (8,), repeats)[:2])
        out.append('')
    finally:
        torch.set_num_threads(threads)
    if torch.cuda.is_available():
        prof = get_profile('vlm3r-7b')
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        big = Vlm3rModel.random(prof, seed=0)
        build = time.perf_counter() - start
        out.append(f'### vlm3r-7b sizes, {torch.cuda.get_device_name()}, bfloat16, random weights '
                   f'(built on the GPU in {build:.1f} s)')
        out.append('')
        out.extend(_bench_profile(big, counts, repeats))
        out.append(f'- peak GPU memory: {torch.cuda.max_memory_allocated() / 2 ** 30:.1f} GiB')
        del big
        torch.cuda.empty_cache()
    else:
        out.append('_No CUDA device: the 7B-size measurements were skipped._')
    out.append('')
    return '\n'.join(out)


def main() -> None:
    """Print the Markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='one repetition instead of three')
    print(run(quick=parser.parse_args().quick))


if __name__ == '__main__':
    main()
