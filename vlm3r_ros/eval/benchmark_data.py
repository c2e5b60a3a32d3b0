"""VSI-Bench and VSTI-Bench in their published layouts: question tables and local videos.

Layouts read (no network; the user downloads and unpacks the datasets first):

* **VSI-Bench** (``nyu-visionx/VSI-Bench``): a question table
  ``test-00000-of-00001.parquet`` (any ``*.parquet``, ``*.jsonl`` or ``*.json`` table
  works) with columns ``id``, ``dataset``, ``scene_name``, ``question_type``,
  ``question``, ``options`` (list of 'A. ...' strings, empty or null for numeric
  questions) and ``ground_truth`` (the option letter, or the number as text); the videos
  from ``arkitscenes.zip``, ``scannet.zip`` and ``scannetpp.zip`` unpacked next to it, at
  ``<dataset>/<scene_name>.mp4`` (the path the official evaluator builds).
* **VSTI-Bench** (``Journey9ni/vstibench``, VLM-3R): a question table with
  ``video_path`` (relative to the dataset root, as the official evaluator joins it),
  ``question_type``, ``question``, ``options``, ``mc_answer`` (the letter of multiple
  choice questions) and ``ground_truth`` (the number of numeric ones); ``id`` when present.

Question types decide the answer type exactly as the official evaluators' lists do
(:mod:`vlm3r_ros.eval.official_scoring`); an unknown type raises, as there. Videos are
decoded with OpenCV's ``VideoCapture`` (the reference uses decord: both are FFmpeg
decoders, so frames can differ by a few grey levels); the official frames are
``linspace(0, N - 1, 32)`` cast to int over the N decoded frames.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from vlm3r_ros.eval.official_scoring import MC_TYPES, benchmark_of
from vlm3r_ros.eval.qa import QAItem

BENCHMARKS = ('vsibench', 'vstibench')
BENCHMARK_NAMES = {'vsibench': 'VSI-Bench', 'vstibench': 'VSTI-Bench'}
TABLE_SUFFIXES = ('.parquet', '.jsonl', '.json')
REFERENCE_FRAMES = 32


class BenchmarkDataError(ValueError):
    """The directory does not hold a benchmark in a published layout (message says why)."""


@dataclass
class BenchmarkSet:
    """A benchmark's questions (as :class:`QAItem`, ``meta['video']`` their video file)."""

    benchmark: str
    table: Path
    items: list[QAItem]
    videos_dir: Path
    missing_videos: list[Path] = field(default_factory=list)


def find_table(root: Path) -> Path:
    """Return the question table in ``root`` (or ``root/data``): the official parquet name
    first, else the only ``*.parquet`` / ``*.jsonl`` / ``*.json`` there.

    Raises BenchmarkDataError when there is none or several candidates.
    """
    official = root / 'test-00000-of-00001.parquet'
    if official.is_file():
        return official
    for folder in (root, root / 'data'):
        for suffix in TABLE_SUFFIXES:
            found = sorted(p for p in folder.glob(f'*{suffix}') if p.name != 'qa.json')
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise BenchmarkDataError(f'several question tables in {folder}: '
                                         f'{", ".join(p.name for p in found)}; pass one')
    raise BenchmarkDataError(f'no question table (*.parquet, *.jsonl, *.json) in {root}')


def read_table(path: Path) -> list[dict[str, Any]]:
    """Return the rows of a parquet, JSON-lines or JSON (list, or {'data': [...]}) table."""
    if path.suffix == '.parquet':
        import pyarrow.parquet as pq
        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding='utf8')
    if path.suffix == '.jsonl':
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    doc = json.loads(text)
    rows = doc.get('data', doc.get('test')) if isinstance(doc, dict) else doc
    if not isinstance(rows, list):
        raise BenchmarkDataError(f'{path} holds no list of questions')
    return rows


def detect_benchmark(rows: Sequence[dict[str, Any]]) -> str:
    """Return 'vsibench' or 'vstibench' from the columns of ``rows``."""
    if not rows:
        raise BenchmarkDataError('the question table is empty')
    columns = set(rows[0])
    if 'video_path' in columns or 'mc_answer' in columns:
        return 'vstibench'
    if {'dataset', 'scene_name'} <= columns:
        return 'vsibench'
    raise BenchmarkDataError(f'cannot tell the benchmark from the columns {sorted(columns)}')


def _item(row: dict[str, Any], index: int, benchmark: str, videos: Path) -> QAItem:
    qtype = str(row['question_type'])
    name = BENCHMARK_NAMES[benchmark]
    if benchmark_of(qtype) != name:
        raise BenchmarkDataError(f'row {index}: question type {qtype!r} is not a {name} type '
                                 '(the official evaluator raises on it)')
    options = [str(o) for o in (row.get('options') or [])]
    if benchmark == 'vsibench':
        video = videos / str(row['dataset']) / f'{row["scene_name"]}.mp4'
        truth = row['ground_truth']
    else:
        video = videos / str(row['video_path'])
        truth = row['mc_answer'] if qtype in MC_TYPES else row['ground_truth']
    kind = 'option' if qtype in MC_TYPES else 'number'
    ident = row.get('id')
    return QAItem(
        id=str(index if ident is None else ident), task=qtype, question=str(row['question']),
        options=options, answer=str(truth), answer_type=kind, benchmark=name,
        answer_text=str(row.get('ground_truth', truth)),
        meta={'video': str(video), 'question_type': qtype,
              **{k: row[k] for k in ('dataset', 'scene_name', 'video_path') if k in row}})


def load_benchmark(root: str | Path, benchmark: str = 'auto', videos: str | Path | None = None,
                   table: str | Path | None = None) -> BenchmarkSet:
    """Return the questions of the benchmark in ``root`` (videos under ``videos`` or root).

    Raises BenchmarkDataError for an unreadable or unknown layout, an unknown question
    type or repeated ids. Missing videos are listed, not raised (their questions score 0).
    """
    root = Path(root)
    path = Path(table) if table else find_table(root)
    try:
        rows = read_table(path)
    except (OSError, ValueError) as exc:
        raise BenchmarkDataError(f'cannot read {path}: {exc}') from None
    kind = detect_benchmark(rows) if benchmark == 'auto' else benchmark
    if kind not in BENCHMARKS:
        raise BenchmarkDataError(f'benchmark must be auto or one of {BENCHMARKS}, got {kind!r}')
    videos_dir = Path(videos) if videos else root
    try:
        items = [_item(row, k, kind, videos_dir) for k, row in enumerate(rows)]
    except KeyError as exc:
        raise BenchmarkDataError(f'{path}: column {exc} missing for {kind}') from None
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise BenchmarkDataError(f'{path}: question ids repeat')
    missing = sorted({Path(i.meta['video']) for i in items if not Path(i.meta['video']).is_file()})
    return BenchmarkSet(kind, path, items, videos_dir, missing)


def looks_like_benchmark(root: Path) -> bool:
    """Return True when ``root`` holds a question table and no vlm3r_ros bag (qa.json)."""
    if (root / 'qa.json').is_file():
        return False
    try:
        find_table(root)
    except BenchmarkDataError:
        return False
    return True


# --------------------------------------------------------------------------- videos
def reference_indices(total: int, frames: int = REFERENCE_FRAMES) -> np.ndarray:
    """Return the official frame indices: ``linspace(0, total - 1, frames)`` cast to int."""
    if total < 1:
        raise ValueError('the video has no frame')
    return np.linspace(0, total - 1, frames, dtype=int)


@dataclass(frozen=True)
class VideoInfo:
    """A decoded video's frame count (counted by decoding) and frame rate."""

    frames: int
    fps: float


def video_info(path: str | Path) -> VideoInfo:
    """Return the exact frame count (every frame grabbed) and the frame rate of a video.

    Raises OSError when OpenCV cannot open it.
    """
    import cv2
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise OSError(f'cannot open video {path}')
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS)) or 30.0
        count = 0
        while cap.grab():
            count += 1
    finally:
        cap.release()
    return VideoInfo(count, fps)


def iter_frames(path: str | Path, indices: Sequence[int] | None = None
                ) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (index, RGB uint8 frame) for ``indices`` (sorted, repeats yielded again) or
    for every frame. Raises OSError when the video cannot be opened."""
    import cv2
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise OSError(f'cannot open video {path}')
    wanted = None if indices is None else sorted(int(i) for i in indices)
    try:
        index, pos = 0, 0
        while wanted is None or pos < len(wanted):
            if wanted is not None and wanted[pos] > index:
                if not cap.grab():
                    return
                index += 1
                continue
            ok, bgr = cap.read()
            if not ok:
                return
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            if wanted is None:
                yield index, rgb
            else:
                while pos < len(wanted) and wanted[pos] == index:
                    yield index, rgb
                    pos += 1
            index += 1
    finally:
        cap.release()


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: float = 10.0) -> Path:
    """Write RGB frames to an MP4 (OpenCV's 'mp4v'); return the path. Raises OSError when
    no writer opens."""
    import cv2
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), fps, (w, h))
    if not writer.isOpened():
        raise OSError(f'cannot write video {path}')
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def write_parquet(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write ``rows`` as a parquet table (the published VSI-Bench/VSTI-Bench format)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(list(rows)), path)
    return path
