"""``vlm3r-dataset``: render synthetic RGB-D sequences into Arrow shards.

    vlm3r-dataset --out data/geometry --train 480 --val 24 --test 24 --workers 2

Layout (read back with Hugging Face ``datasets``; nothing is pickled)::

    <out>/manifest.json                 splits, seed ranges, camera, generator version
    <out>/<split>/shard-00000/frames/   one row per frame: scene_seed, frame, time_s,
                                        rgb (PNG), depth (16-bit PNG, millimetres,
                                        0 = no hit), ids (16-bit PNG, instance id + 8:
                                        0-7 are room surfaces), K (9), pose (16,
                                        camera-to-world, OpenCV axes, metres)
    <out>/<split>/shard-00000/scenes/   one row per scene: scene_seed, scene (JSON:
                                        objects, room, lighting), params (JSON: the
                                        drawn camera/path values), qa (JSON list of
                                        every task's QA items, VSI-/VSTI-Bench formats)

Splits use disjoint seed ranges (train from 1,000,000, val from 2,000,000, test from
3,000,000), so a held-out scene can never be a training scene. Each shard is a pure
function of its seeds; shards are written to a temporary folder and renamed when
complete, so an interrupted run resumes by skipping finished shards. Shards render in
parallel processes.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np

SPLIT_SEED_BASE: dict[str, int] = {'train': 1_000_000, 'val': 2_000_000, 'test': 3_000_000}
ID_OFFSET = 8  # room-surface codes are -1..-6; stored ids are id + 8 in uint16
DEPTH_SCALE = 1000.0  # stored depth unit: millimetres
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ShardJob:
    """One shard to render: its split, index, seeds and sequence settings."""

    split: str
    index: int
    seeds: tuple[int, ...]
    seconds: float
    rate_hz: float
    width: int
    height: int
    with_qa: bool
    qa_frames: int = 32
    qa_per_task: int = 4
    qa_rules: str = 'official'


def split_seeds(split: str, count: int) -> list[int]:
    """Return the ``count`` scene seeds of ``split``; raises KeyError for an unknown split."""
    return [SPLIT_SEED_BASE[split] + i for i in range(count)]


def encode_png(array: np.ndarray) -> bytes:
    """Return lossless PNG bytes of a uint8 RGB or uint16 single-channel array."""
    img = array[..., ::-1] if array.ndim == 3 else array  # OpenCV writes BGR
    ok, buf = cv2.imencode('.png', np.ascontiguousarray(img), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError('PNG encoding failed')
    return buf.tobytes()


def decode_rgb(data: bytes) -> np.ndarray:
    """Return the HxWx3 uint8 RGB image of PNG bytes; raises ValueError if unreadable."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError('unreadable RGB PNG')
    return img[..., ::-1].copy()


def decode_depth(data: bytes) -> np.ndarray:
    """Return the HxW float32 depth (metres, 0 = invalid) of a 16-bit PNG."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.dtype != np.uint16:
        raise ValueError('unreadable 16-bit depth PNG')
    return img.astype(np.float32) / DEPTH_SCALE


def decode_ids(data: bytes) -> np.ndarray:
    """Return the HxW int16 id map (instance id, or negative room-surface code)."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.dtype != np.uint16:
        raise ValueError('unreadable 16-bit id PNG')
    return (img.astype(np.int32) - ID_OFFSET).astype(np.int16)


def _render_shard(job: ShardJob) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """Render every scene of ``job``; return the frame and scene columns."""
    from vlm3r_ros.eval.qa import ALL_TASKS, Visibility, generate_qa
    from vlm3r_ros.eval.render import render_full
    from vlm3r_ros.train.scene_sampling import sample_sequence

    frames: dict[str, list[Any]] = {k: [] for k in
                                    ('scene_seed', 'frame', 'time_s', 'rgb', 'depth', 'ids',
                                     'K', 'pose')}
    scenes: dict[str, list[Any]] = {k: [] for k in ('scene_seed', 'scene', 'params', 'qa')}
    for seed in job.seeds:
        spec = sample_sequence(seed, job.seconds, job.rate_hz, job.width, job.height)
        n_obj = len(spec.scene.objects)
        pixels = np.zeros((len(spec.trajectory), n_obj), dtype=np.int32)
        for i, pose in enumerate(spec.trajectory.poses):
            out = render_full(spec.scene, pose, spec.K, job.width, job.height)
            depth_mm = np.where(np.isfinite(out.depth), np.round(out.depth * DEPTH_SCALE), 0)
            valid = out.ids[out.ids >= 0]
            if valid.size:
                pixels[i] = np.bincount(valid, minlength=n_obj)[:n_obj]
            frames['scene_seed'].append(seed)
            frames['frame'].append(i)
            frames['time_s'].append(float(spec.trajectory.times[i]))
            frames['rgb'].append(encode_png(out.rgb))
            frames['depth'].append(encode_png(np.clip(depth_mm, 0, 65535).astype(np.uint16)))
            frames['ids'].append(encode_png((out.ids.astype(np.int32) + ID_OFFSET)
                                            .astype(np.uint16)))
            frames['K'].append(spec.K.reshape(-1).tolist())
            frames['pose'].append(pose.reshape(-1).tolist())
        qa: list[dict[str, Any]] = []
        if job.with_qa:
            vis = Visibility(pixels=pixels, image_pixels=job.width * job.height)
            qa = [item.to_dict() for item in generate_qa(
                spec.scene, spec.trajectory, spec.K, job.width, job.height, seed=seed,
                tasks=ALL_TASKS, visibility=vis, num_frames=job.qa_frames,
                max_per_task=job.qa_per_task, rules=job.qa_rules)]
        scenes['scene_seed'].append(seed)
        scenes['scene'].append(json.dumps(spec.scene.to_dict()))
        scenes['params'].append(json.dumps(spec.params))
        scenes['qa'].append(json.dumps(qa))
    return frames, scenes


def _features() -> tuple[Any, Any]:
    """Return the Arrow schemas of the frame and scene tables."""
    from datasets import Features, Sequence as Seq, Value
    frames = Features({
        'scene_seed': Value('int64'), 'frame': Value('int32'), 'time_s': Value('float32'),
        'rgb': Value('binary'), 'depth': Value('binary'), 'ids': Value('binary'),
        'K': Seq(Value('float64'), length=9), 'pose': Seq(Value('float64'), length=16)})
    scenes = Features({'scene_seed': Value('int64'), 'scene': Value('string'),
                       'params': Value('string'), 'qa': Value('string')})
    return frames, scenes


def shard_dir(root: Path, split: str, index: int) -> Path:
    """Return the folder of one shard."""
    return root / split / f'shard-{index:05d}'


def write_shard(root: Path, job: ShardJob) -> Path:
    """Render ``job`` and save it under ``root`` (atomically); return the shard folder."""
    from datasets import Dataset, disable_progress_bars
    disable_progress_bars()  # one bar for the whole build, not two per shard
    final = shard_dir(root, job.split, job.index)
    tmp = final.with_name(final.name + f'.tmp{os.getpid()}')
    if tmp.exists():
        shutil.rmtree(tmp)
    frame_cols, scene_cols = _render_shard(job)
    f_feat, s_feat = _features()
    Dataset.from_dict(frame_cols, features=f_feat).save_to_disk(str(tmp / 'frames'))
    Dataset.from_dict(scene_cols, features=s_feat).save_to_disk(str(tmp / 'scenes'))
    tmp.rename(final)
    return final


def plan_jobs(splits: dict[str, int], shard_size: int, seconds: dict[str, float],
              rate_hz: float, width: int, height: int, with_qa: bool, qa_frames: int = 32,
              qa_per_task: int = 4, qa_rules: str = 'official') -> list[ShardJob]:
    """Return the shard jobs for ``splits`` ({split: number of scenes})."""
    jobs = []
    for split, count in splits.items():
        seeds = split_seeds(split, count)
        for index, start in enumerate(range(0, count, shard_size)):
            jobs.append(ShardJob(split, index, tuple(seeds[start:start + shard_size]),
                                 seconds[split], rate_hz, width, height, with_qa,
                                 qa_frames, qa_per_task, qa_rules))
    return jobs


def build(root: Path, jobs: Sequence[ShardJob], workers: int, progress: bool = True
          ) -> dict[str, Any]:
    """Render every missing shard of ``jobs`` into ``root``; return timing figures.

    Finished shards are skipped, so calling this again after an interruption resumes.
    """
    from tqdm import tqdm
    todo = [j for j in jobs if not shard_dir(root, j.split, j.index).is_dir()]
    scenes = sum(len(j.seeds) for j in todo)
    start = time.monotonic()
    bar = tqdm(total=scenes, unit='scene', disable=not progress, file=sys.stderr)
    if workers <= 1:
        for job in todo:
            write_shard(root, job)
            bar.update(len(job.seeds))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(write_shard, root, job): job for job in todo}
            for future in futures:
                future.result()
                bar.update(len(futures[future].seeds))
    bar.close()
    elapsed = time.monotonic() - start
    return {'scenes_rendered': scenes, 'seconds': round(elapsed, 2),
            'scenes_per_min': round(60.0 * scenes / elapsed, 2) if scenes else None,
            'workers': workers}


def load_split(root: str | Path, split: str, table: str = 'frames') -> Any:
    """Return one table ('frames' or 'scenes') of a split as one ``datasets.Dataset``.

    Raises:
        FileNotFoundError: when the split has no finished shard.
    """
    from datasets import concatenate_datasets, load_from_disk
    shards = sorted(p for p in (Path(root) / split).glob('shard-*') if '.tmp' not in p.name)
    if not shards:
        raise FileNotFoundError(f'no shards for split {split!r} under {root}')
    parts = [load_from_disk(str(p / table)) for p in shards]
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def iter_scene_frames(frames: Any) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (scene_seed, row indices in frame order) of a frames table."""
    seeds = np.asarray(frames['scene_seed'])
    order = np.lexsort((np.asarray(frames['frame']), seeds))
    bounds = np.flatnonzero(np.diff(seeds[order])) + 1
    for rows in np.split(order, bounds):
        if rows.size:
            yield int(seeds[rows[0]]), rows


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``vlm3r-dataset``."""
    p = argparse.ArgumentParser(prog='vlm3r-dataset', description=__doc__.splitlines()[0])
    p.add_argument('--out', type=Path, default=Path('data/geometry'), help='dataset folder')
    p.add_argument('--train', type=int, default=480, help='training scenes (default 480)')
    p.add_argument('--val', type=int, default=24, help='validation scenes (default 24)')
    p.add_argument('--test', type=int, default=24, help='test scenes (default 24)')
    p.add_argument('--train-seconds', type=float, default=12.0,
                   help='seconds of camera path per training scene (default 12)')
    p.add_argument('--eval-seconds', type=float, default=30.0,
                   help='seconds per val/test scene (default 30: the pose metrics use 30 s)')
    p.add_argument('--rate-hz', type=float, default=5.0, help='frame rate (default 5)')
    p.add_argument('--width', type=int, default=224, help='rendered width (default 224)')
    p.add_argument('--height', type=int, default=168, help='rendered height (default 168)')
    p.add_argument('--shard-size', type=int, default=8, help='scenes per shard (default 8)')
    p.add_argument('--workers', type=int, default=os.cpu_count() or 1,
                   help='parallel processes (default: all cores)')
    p.add_argument('--no-qa', action='store_true', help='skip the QA items')
    p.add_argument('--qa-frames', type=int, default=32,
                   help='N of "frame k of N" in the QA items: the frames a model is shown '
                        '(default 32, the benchmarks\' count)')
    p.add_argument('--qa-per-task', type=int, default=4,
                   help='QA items per task and scene (default 4; more gives the debiasing '
                        'step a larger pool)')
    p.add_argument('--qa-rules', choices=('official', 'exact'), default='official',
                   help="question filters of generate_qa (default 'official')")
    p.add_argument('--regenerate-qa', action='store_true',
                   help='rewrite the QA items of existing shards with the current generator '
                        'and --qa-* settings (from the stored id maps: nothing is re-rendered)')
    return p


def regenerate_shard_qa(shard: Path, job: ShardJob) -> None:
    """Rewrite one shard's QA column from its stored id maps (atomic: tmp + rename).

    The scene and camera path come back from their seeds (`sample_sequence` is
    deterministic, checked against the stored scene); visibility comes from the stored
    per-pixel ids, as when the shard was rendered. Raises ValueError on a mismatch.
    """
    from datasets import Dataset, disable_progress_bars, load_from_disk
    from vlm3r_ros.eval.qa import ALL_TASKS, Visibility, generate_qa
    from vlm3r_ros.train.scene_sampling import sample_sequence
    disable_progress_bars()
    frames = load_from_disk(str(shard / 'frames'))
    scenes = load_from_disk(str(shard / 'scenes'))
    cols = scenes.to_dict()
    by_seed = dict(iter_scene_frames(frames))
    qa = []
    for seed, scene_json in zip(cols['scene_seed'], cols['scene']):
        spec = sample_sequence(seed, job.seconds, job.rate_hz, job.width, job.height)
        if json.dumps(spec.scene.to_dict()) != scene_json:
            raise ValueError(f'scene {seed} of {shard} does not match its seed')
        n_obj = len(spec.scene.objects)
        pixels = np.zeros((len(spec.trajectory), n_obj), dtype=np.int32)
        for i, row in enumerate(by_seed[int(seed)]):
            ids = decode_ids(frames[int(row)]['ids'])
            valid = ids[ids >= 0].astype(np.int64)
            if valid.size:
                pixels[i] = np.bincount(valid, minlength=n_obj)[:n_obj]
        vis = Visibility(pixels=pixels, image_pixels=job.width * job.height)
        qa.append(json.dumps([item.to_dict() for item in generate_qa(
            spec.scene, spec.trajectory, spec.K, job.width, job.height, seed=seed,
            tasks=ALL_TASKS, visibility=vis, num_frames=job.qa_frames,
            max_per_task=job.qa_per_task, rules=job.qa_rules)]))
    cols['qa'] = qa
    tmp = shard.with_name(shard.name + f'.qa{os.getpid()}')
    if tmp.exists():
        shutil.rmtree(tmp)
    Dataset.from_dict(cols, features=_features()[1]).save_to_disk(str(tmp))
    old = shard / 'scenes.old'
    (shard / 'scenes').rename(old)
    tmp.rename(shard / 'scenes')
    shutil.rmtree(old)


def _regenerate(args: Any) -> tuple[Path, ShardJob]:
    regenerate_shard_qa(*args)
    return args


def main(argv: list[str] | None = None) -> int:
    """Build (or resume) the dataset; print timing; return 0."""
    args = build_parser().parse_args(argv)
    splits = {'train': args.train, 'val': args.val, 'test': args.test}
    seconds = {'train': args.train_seconds, 'val': args.eval_seconds, 'test': args.eval_seconds}
    manifest = {'format_version': FORMAT_VERSION, 'splits': splits,
                'seed_base': SPLIT_SEED_BASE, 'seconds': seconds, 'rate_hz': args.rate_hz,
                'width': args.width, 'height': args.height, 'shard_size': args.shard_size,
                'depth_unit_m': 1.0 / DEPTH_SCALE, 'id_offset': ID_OFFSET,
                'qa': not args.no_qa, 'qa_frames': args.qa_frames,
                'qa_per_task': args.qa_per_task, 'qa_rules': args.qa_rules}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / 'manifest.json'
    jobs = plan_jobs(splits, args.shard_size, seconds, args.rate_hz, args.width, args.height,
                     not args.no_qa, args.qa_frames, args.qa_per_task, args.qa_rules)
    if args.regenerate_qa:
        todo = [(shard_dir(args.out, j.split, j.index), j) for j in jobs
                if shard_dir(args.out, j.split, j.index).is_dir()]
        start = time.monotonic()
        with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
            for _ in pool.map(_regenerate, todo):
                pass
        path.write_text(json.dumps(manifest, indent=1), encoding='utf8')
        print(json.dumps({'shards_regenerated': len(todo),
                          'seconds': round(time.monotonic() - start, 1)}))
        return 0
    if path.is_file():
        old = json.loads(path.read_text(encoding='utf8'))
        if {k: v for k, v in old.items() if k != 'splits'} != \
                {k: v for k, v in manifest.items() if k != 'splits'}:
            print(f'error: {args.out} holds a dataset with other settings; use a new --out',
                  file=sys.stderr)
            return 2
    path.write_text(json.dumps(manifest, indent=1), encoding='utf8')
    stats = build(args.out, jobs, args.workers)
    print(json.dumps(stats))
    return 0


if __name__ == '__main__':
    sys.exit(main())
