"""Benchmark: keyframe selection, voxelization and frame-buffer ingest (issue 4).

Measures, in one run on this machine:
  * ``CoverageIndex.select`` (lazy greedy over dense voxel ids) against ``greedy_reference``
    (Python sets, every gain recomputed every round) on a synthetic room scan: a camera
    walking an ellipse through a furnished room, each frame a noisy frustum view of the
    room's shared surface-voxel cloud, at budgets 8/16/32 and ratio 0.95; selections are
    asserted identical;
  * back-projection + voxelization of one 1280x720 depth map per frame;
  * ``FrameBuffer.add`` throughput for 1280x720 RGB frames with eviction.

``run(quick=True)`` shrinks every size so the whole benchmark takes a few seconds.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from typing import Callable

import numpy as np

try:
    from vlm3r_ros.pipeline.coverage import CoverageIndex, greedy_reference
except ImportError:  # run as a script from a checkout: put the repo root on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from vlm3r_ros.pipeline.coverage import CoverageIndex, greedy_reference
from vlm3r_ros.pipeline.frame_buffer import FrameBuffer
from vlm3r_ros.pipeline.voxels import points_from_depth, voxel_keys

VOXEL = 0.1


def _median_ms(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), out


def _room_cloud(rng: np.random.Generator) -> np.ndarray:
    """Voxel centres of a 10 x 8 x 3 m room's surfaces plus a few box-shaped furniture."""
    def grid(xs, ys, zs) -> np.ndarray:
        return np.stack(np.meshgrid(xs, ys, zs, indexing='ij'), -1).reshape(-1, 3)
    c = VOXEL / 2
    xs, ys, zs = np.arange(0, 10, VOXEL) + c, np.arange(0, 8, VOXEL) + c, np.arange(0, 3, VOXEL) + c
    parts = [grid(xs, ys, [c]), grid(xs, ys, [3 - c]), grid([c], ys, zs), grid([10 - c], ys, zs),
             grid(xs, [c], zs), grid(xs, [8 - c], zs)]
    for _ in range(10):  # furniture: the visible shell of random boxes
        x0, y0 = rng.uniform(0.5, 8.5), rng.uniform(0.5, 6.5)
        w, d, h = rng.uniform(0.5, 1.5), rng.uniform(0.5, 1.2), rng.uniform(0.4, 2.0)
        bx, by = np.arange(x0, x0 + w, VOXEL), np.arange(y0, y0 + d, VOXEL)
        bz = np.arange(c, h, VOXEL)
        parts += [grid(bx, by, [h]), grid([x0], by, bz), grid([x0 + w], by, bz),
                  grid(bx, [y0], bz), grid(bx, [y0 + d], bz)]
    return np.unique(np.floor(np.concatenate(parts) / VOXEL).astype(np.int64), axis=0) * VOXEL + c


def _scan(n_frames: int, seed: int = 0) -> tuple[list[np.ndarray], list[int], int]:
    """Per-frame voxel keys of a camera walking 1.5 laps of an ellipse in the room.

    Each frame sees the room voxels inside a 75 x 50 degree frustum up to 6 m, with 10 %
    depth dropouts; depth noise is modelled as a fixed one-voxel "thick surface" band (each
    surface voxel has one neighbour that a view hits with probability 0.25, the same
    neighbour in every view) plus 0.05 % outliers displaced by about 0.3 m (unique voxels).
    """
    rng = np.random.default_rng(seed)
    cloud = _room_cloud(rng)
    axis = rng.integers(0, 3, size=len(cloud))
    band = cloud.copy()
    band[np.arange(len(cloud)), axis] += rng.choice([-VOXEL, VOXEL], size=len(cloud))
    keys_of = []
    stamps = []
    for i in range(n_frames):
        a = 3 * np.pi * i / n_frames
        pos = np.array([5 + 3.2 * np.cos(a), 4 + 2.4 * np.sin(a), 1.4 + 0.1 * np.sin(7 * a)])
        yaw = a + np.pi / 2 + 0.9 * np.sin(5 * a)  # walking direction, looking around
        pitch = -0.25 + 0.1 * np.sin(3 * a)
        fwd = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
        rel = cloud - pos
        dist = np.linalg.norm(rel, axis=1)
        cosang = rel @ fwd / np.maximum(dist, 1e-6)
        horiz = np.abs(np.arctan2(rel[:, 1], rel[:, 0]) - yaw + np.pi) % (2 * np.pi) - np.pi
        vis = np.nonzero((dist > 0.3) & (dist < 6.0) & (cosang > np.cos(0.7))
                         & (np.abs(horiz) < 0.65))[0]
        surf = cloud[vis[rng.random(vis.size) > 0.1]]
        thick = band[vis[rng.random(vis.size) < 0.25]]
        outl = surf[rng.random(len(surf)) < 0.0005]
        outl = outl + rng.normal(0, 0.3, size=outl.shape)
        keys_of.append(voxel_keys(np.concatenate((surf, thick, outl)), VOXEL))
        stamps.append(i * 33_333_333)
    return keys_of, stamps, len(cloud)


def _bench_selection(quick: bool) -> list[str]:
    n = 80 if quick else 1000
    ref_repeats, fast_repeats = (1, 3) if quick else (3, 7)
    keys_of, stamps, n_cloud = _scan(n)
    sizes = np.array([k.size for k in keys_of])
    idx = CoverageIndex()
    t0 = time.perf_counter()
    for f, (k, s) in enumerate(zip(keys_of, stamps)):
        idx.add(f, s, k)
    add_ms = (time.perf_counter() - t0) * 1e3 / n
    sets = {f: set(k.tolist()) for f, k in enumerate(keys_of)}
    stamp_of = dict(enumerate(stamps))
    lines = [
        f'Synthetic room scan: {n} candidate frames, {n_cloud} surface voxels in the room, '
        f'{idx.n_voxels} distinct voxels seen, voxels per frame median {int(np.median(sizes))} '
        f'(min {sizes.min()}, max {sizes.max()}). Index build (once per frame, '
        f'`CoverageIndex.add`): {add_ms:.3f} ms/frame.',
        '',
        '| budget | ratio | frames picked | coverage | reference ms | select ms | speedup |',
        '|---:|---:|---:|---:|---:|---:|---:|',
    ]
    for budget in (8, 16, 32):
        ref_ms, ref = _median_ms(lambda: greedy_reference(sets, stamp_of, budget, 0.95),
                                 ref_repeats)
        fast_ms, sel = _median_ms(lambda: idx.select(budget, 0.95), fast_repeats)
        assert sel == ref, f'selection differs from the reference at budget {budget}'
        lines.append(f'| {budget} | 0.95 | {len(sel.frame_ids)} | {sel.covered}/{sel.total} '
                     f'({sel.ratio:.3f}) | {ref_ms:.1f} | {fast_ms:.2f} | '
                     f'{ref_ms / fast_ms:.0f}x |')
    # No budget: runs to the ratio (tens of rounds), so the reference runs once here.
    ref_ms, ref = _median_ms(lambda: greedy_reference(sets, stamp_of, None, 0.95), 1)
    fast_ms, sel = _median_ms(lambda: idx.select(None, 0.95), fast_repeats)
    assert sel == ref, 'selection differs from the reference without a budget'
    lines.append(f'| none | 0.95 | {len(sel.frame_ids)} | {sel.covered}/{sel.total} '
                 f'({sel.ratio:.3f}) | {ref_ms:.1f} | {fast_ms:.2f} | {ref_ms / fast_ms:.0f}x |')
    lines += ['', 'Selections (frame ids, coverage, gains) asserted identical to the reference '
              'in every row. Timings: median of '
              f'{ref_repeats} (reference; 1 in the no-budget row) / {fast_repeats} (select) '
              'runs; the reference gets its Python sets prebuilt, select its index prebuilt.']
    return lines


def _depth_map(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = 720, 1280
    K = np.array([[900.0, 0, 640], [0, 900.0, 360], [0, 0, 1]])
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    # A floor/wall corner seen at an angle with sensor noise and dropouts.
    depth = 2.0 + 2.5 * (u / w) + 1.0 * np.maximum(0, (v - 400) / h)
    depth = (depth + rng.normal(0, 0.01, size=depth.shape)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.05] = 0.0
    return depth, K


def _bench_voxelize(quick: bool) -> list[str]:
    rng = np.random.default_rng(1)
    depth, K = _depth_map(rng)
    pose = np.eye(4)
    pose[:3, 3] = [1.0, 2.0, 1.5]
    repeats = 3 if quick else 10
    lines = ['| stride | points | voxels | back-project ms | voxel keys ms | total ms/frame |',
             '|---:|---:|---:|---:|---:|---:|']
    for stride in (1, 2, 4):
        bp_ms, pts = _median_ms(lambda: points_from_depth(depth, K, pose, stride=stride), repeats)
        vk_ms, keys = _median_ms(lambda: voxel_keys(pts, VOXEL), repeats)
        lines.append(f'| {stride} | {len(pts)} | {keys.size} | {bp_ms:.2f} | {vk_ms:.2f} | '
                     f'{bp_ms + vk_ms:.2f} |')
    return lines


def _bench_ingest(quick: bool) -> list[str]:
    n = 300 if quick else 3000
    pool = [np.full((720, 1280, 3), i, dtype=np.uint8) for i in range(4)]
    frame_bytes = pool[0].nbytes
    evicted = [0]

    def on_evict(_rec: object) -> None:
        evicted[0] += 1

    buf = FrameBuffer(max_frames=64, max_span_s=2.0, max_bytes=48 * frame_bytes,
                      on_evict=on_evict)
    t0 = time.perf_counter()
    for i in range(n):
        buf.add(i * 33_333_333, pool[i % 4])
    dt = time.perf_counter() - t0
    s = buf.stats()
    return [f'`FrameBuffer.add` of {n} 1280x720 RGB frames (30 Hz stamps, bounds 64 frames / '
            f'2 s / {48 * frame_bytes / 2**20:.0f} MiB, {s.frames} kept, {s.evicted} evicted, '
            f'on_evict called {evicted[0]} times): {n / dt:,.0f} frames/s '
            f'({dt / n * 1e6:.1f} us/frame; images stored by reference).']


def run(quick: bool = False) -> str:
    """Run the benchmark and return a Markdown section (``## `` heading) with the results.

    Raises:
        AssertionError: if the fast selection ever differs from the reference greedy.
    """
    t0 = time.perf_counter()
    sel = _bench_selection(quick)
    vox = _bench_voxelize(quick)
    ing = _bench_ingest(quick)
    cpu = f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores'
    out = ['## Keyframe selection, voxelization and frame buffer' + (' (quick)' if quick else ''),
           '', f'Machine: {cpu}; Python {platform.python_version()}, NumPy {np.__version__}.', '',
           '### Maximum-coverage selection: `CoverageIndex.select` vs `greedy_reference`', '',
           *sel, '', '### Voxelization of one 1280x720 depth map (0.1 m voxels)', '', *vox, '',
           '### Frame-buffer ingest', '', *ing, '',
           f'Benchmark wall time: {time.perf_counter() - t0:.1f} s.', '']
    return '\n'.join(out)


if __name__ == '__main__':
    print(run(quick='--quick' in sys.argv[1:]))
