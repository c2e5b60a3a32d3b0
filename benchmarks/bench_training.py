"""Benchmark of the training side: dataset rendering and geometry training throughput.

* ``vlm3r-dataset`` rendering (scenes/min, frames/s) with 1 and with all worker processes
  in the same run (the ratio is what parallel generation buys on this machine);
* geometry training steps of the small CUT3R (views/s of forward + backward + AdamW) at
  4 and 12 views per sequence with the same views per step, on CPU (and CUDA if present);
* the node's per-frame streaming step (``Cut3rStream``) of the small CUT3R beside the
  tiny test config;
* the last real training run (``out/train_geometry/summary.json`` + metrics), if any.

Usage: ``python benchmarks/bench_training.py [--quick]``; ``run(quick)`` returns Markdown.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from vlm3r_ros.models.cut3r.config import Cut3rConfig  # noqa: E402
from vlm3r_ros.models.cut3r.model import Cut3rModel  # noqa: E402
from vlm3r_ros.models.cut3r.stream import Cut3rStream  # noqa: E402
from vlm3r_ros.train import dataset as ds  # noqa: E402
from vlm3r_ros.train.train_geometry import Rollout  # noqa: E402


def bench_dataset(scenes: int, seconds: float) -> list[str]:
    """Return table rows: rendering ``scenes`` scenes with 1 and with all workers."""
    rows = []
    base = None
    for workers in sorted({1, os.cpu_count() or 1}):
        with tempfile.TemporaryDirectory() as tmp:
            jobs = ds.plan_jobs({'train': scenes}, 1, {'train': seconds}, 5.0, 224, 168, True)
            stats = ds.build(Path(tmp), jobs, workers, progress=False)
        frames = scenes * int(round(seconds * 5.0))
        rate = stats['scenes_per_min']
        base = base or rate
        rows.append(f'| {workers} | {scenes} x {seconds:g} s | {stats["seconds"]:.1f} | '
                    f'{rate:.1f} | {frames / stats["seconds"]:.1f} | {rate / base:.2f}x |')
    return rows


def bench_train_step(device: str, views_per_step: int, repeats: int) -> list[str]:
    """Return table rows: training views/s of the small CUT3R at 4 and 12 views."""
    rows = []
    torch.manual_seed(0)
    model = Cut3rModel(Cut3rConfig.small()).to(device).train()
    rollout = Rollout(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    h, w = model.config.img_size
    for views in (4, 12):
        b = max(1, views_per_step // views)
        img = torch.randn(b, views, 3, h, w, device=device)
        times = []
        for i in range(repeats + 1):
            if device == 'cuda':
                torch.cuda.synchronize()
            t = time.perf_counter()
            outs = rollout(img)
            loss = sum(o['pts_self'].square().mean() + o['camera_pose'].square().mean()
                       for o in outs)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if device == 'cuda':
                torch.cuda.synchronize()
            if i:  # the first step warms up
                times.append(time.perf_counter() - t)
        dt = statistics.median(times)
        rows.append(f'| {device} | {views} | {b} | {dt * 1000:.0f} | {b * views / dt:.1f} |')
    return rows


def bench_stream(frames: int) -> list[str]:
    """Return table rows: the node's streaming step for the small and the tiny config."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(frames)]
    rows = []
    for name, cfg in (('small (shipped)', Cut3rConfig.small()),
                      ('tiny (tests)', Cut3rConfig.tiny())):
        torch.manual_seed(0)
        stream = Cut3rStream(Cut3rModel(cfg).eval(), image_size=cfg.img_size,
                             resize_mode='stretch')
        stream.step(images[0])
        t = time.perf_counter()
        for img in images:
            stream.step(img)
        dt = (time.perf_counter() - t) / frames
        params = sum(p.numel() for p in stream.model.parameters())
        rows.append(f'| {name} | {cfg.img_size[0]}x{cfg.img_size[1]} | {params / 1e6:.2f}M | '
                    f'{dt * 1000:.1f} | {1 / dt:.1f} |')
    return rows


def last_run_section() -> list[str]:
    """Return the figures of the last geometry training run, or nothing."""
    out = ROOT / 'out' / 'train_geometry'
    path = out / 'summary.json'
    if not path.is_file():
        return []
    s = json.loads(path.read_text())
    rows = [json.loads(r) for r in (out / 'metrics.jsonl').read_text().splitlines() if r]
    rates = [r['views_per_s'] for r in rows if 'views_per_s' in r and r['step'] > 1]
    val = [r for r in rows if 'val_loss' in r]
    best = min(val, key=lambda r: r['val_loss']) if val else {}
    return ['', '### The last training run (`out/train_geometry`)', '',
            f'{s["steps"]} steps in {s["minutes"]:.1f} min on {s["device"]} x{s["world_size"]}, '
            f'{s["config"]["views_per_step"]} views per step; training throughput median '
            f'{statistics.median(rates):.1f} views/s (other work shared the cores part of the '
            f'time). Best validation loss {s["best_val_loss"]:.3f} at step {best.get("step")}: '
            f'val AbsRel {best.get("val_abs_rel", float("nan")):.3f}, δ<1.25 '
            f'{best.get("val_delta_1_25", float("nan")):.3f} (8-view windows).']


def run(quick: bool = False) -> str:
    """Run every part; return the Markdown section."""
    threads = torch.get_num_threads()
    lines = ['## Training side: dataset rendering and geometry training', '',
             '### Dataset rendering (`vlm3r-dataset`, 224x168, QA included)', '',
             '| workers | scenes | seconds | scenes/min | frames/s | vs 1 worker |',
             '|---:|---|---:|---:|---:|---:|']
    lines += bench_dataset(2 if quick else 6, 2.0 if quick else 4.0)
    lines += ['', f'### Geometry training step (small CUT3R, {48} views per step, '
              f'{threads} threads)', '',
              '| device | views/sequence | batch | ms/step | views/s |', '|---|---:|---:|---:|---:|']
    lines += bench_train_step('cpu', 48, 1 if quick else 3)
    if torch.cuda.is_available():
        lines += bench_train_step('cuda', 192, 5)
    lines += ['', '### Streaming step in the node (`Cut3rStream`, 320x240 frames, CPU)', '',
              '| config | input | parameters | ms/frame | frames/s |', '|---|---|---:|---:|---:|']
    lines += bench_stream(5 if quick else 30)
    lines += last_run_section()
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true')
    print(run(parser.parse_args().quick))
