"""vlm3r-eval on VSI-Bench / VSTI-Bench: each video streamed through the node, scored officially.

    vlm3r-eval DATA_DIR --launch --profile vlm3r-7b --protocol reference [--param ...]

DATA_DIR holds a benchmark in its published layout (:mod:`vlm3r_ros.eval.benchmark_data`).
For every video (in the table's order) the tool decodes the frames with OpenCV,
publishes them as ``sensor_msgs/Image`` (rgb8) on the node's image topic, paced on the
node's status so that none is lost, waits until the node took them all, then asks that
video's questions through the node's ``spatial_query`` service with a time window over
the video's stamps, and finally scores every answer with the official rules
(:mod:`vlm3r_ros.eval.official_scoring`), each benchmark's overall on its own.

Streaming: ``--stream sampled`` (default) publishes the video's 32 reference frames
(``linspace(0, N - 1, 32)`` cast to int over the N decoded frames), stamped with their
own times in the video; with protocol 'reference' the node's linspace over those 32
buffered frames takes all of them, so the model sees exactly the official frames.
``--stream all`` publishes every frame and the node does the sampling (same frames when
none is lost; slower: about 10 frames/s of 640x480 under the default pacing, and the
node buffers the whole video). Videos are stamped from 10^6 s downwards, 100 s apart, so
each new video's first frame jumps back in time and the node resets its buffer and world
(a new sequence), exactly one video in memory at a time.

With protocol 'reference' the node's streaming geometry is not needed (every question
runs CUT3R fresh over its frames), so a launched node runs it at 0.1 Hz only; with
'product' every frame gets geometry (keyframes by coverage need it).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from vlm3r_ros.eval.benchmark_data import (BenchmarkDataError, BenchmarkSet, iter_frames,
                                           load_benchmark, reference_indices, video_info)
from vlm3r_ros.eval.official_scoring import BENCHMARK_TYPES
from vlm3r_ros.eval.qa import QAItem

BASE_NS = 1_000_000 * 1_000_000_000  # first video's first stamp: 10^6 s
VIDEO_GAP_NS = 100 * 1_000_000_000  # each next video starts this much earlier
IN_FLIGHT_BYTES, INGEST_WINDOW = 480_000, 4  # as the bag replay (evaluate.py)


@dataclass
class VideoStats:
    """What streaming one video did."""

    video: str
    frames_total: int = 0
    fps: float = 0.0
    published: int = 0
    lost: int = 0
    pace: str = 'ingest'
    pace_timeouts: int = 0
    window_ns: tuple[int, int] = (0, 0)
    seconds: float = 0.0
    error: str = ''


@dataclass
class StreamStats:
    """All videos: counts summed, per-video details kept."""

    videos: list[VideoStats] = field(default_factory=list)

    def totals(self) -> dict[str, Any]:
        """Return the summed counters (JSON-ready)."""
        return {'videos': len(self.videos),
                'frames_published': sum(v.published for v in self.videos),
                'frames_lost': sum(v.lost for v in self.videos),
                'pace_timeouts': sum(v.pace_timeouts for v in self.videos),
                'stream_s': round(sum(v.seconds for v in self.videos), 3),
                'video_errors': [v.error for v in self.videos if v.error]}


def benchmark_node_parameters(profile: str, namespace: str, protocol: str, stream: str,
                              overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Return the ``-p`` parameters of a node launched for a benchmark run.

    Reliable image QoS and a 0.1 s status (the pacing reads it), a buffer that holds one
    whole video (``stream`` 'all') or its 32 frames, no staleness, and the geometry rate
    the protocol needs (see the module docstring). ``overrides`` win.
    """
    ns = namespace.rstrip('/')
    params = {
        'model_profile': profile, 'protocol': protocol,
        'image_topic': f'{ns}/camera/image_raw', 'qos_reliability': 'reliable',
        'status_period_s': '0.1', 'stale_timeout_s': '3600.0',
        'buffer_max_frames': '100000' if stream == 'all' else '256',
        'buffer_max_span_s': '86400.0',
        'buffer_max_mb': '1048576.0' if stream == 'all' else '4096.0',
        'geometry_rate_hz': '0.1' if protocol == 'reference' else '120.0',
    }
    params.update(overrides or {})
    return params


def select_benchmark_items(bench: BenchmarkSet, tasks: Sequence[str] | None,
                           limit: int | None) -> list[QAItem]:
    """Return the items of ``tasks`` (official question types; all when None), at most
    ``limit`` per type. Raises ValueError for a type the benchmark does not have."""
    known = BENCHMARK_TYPES[{'vsibench': 'VSI-Bench', 'vstibench': 'VSTI-Bench'}[bench.benchmark]]
    unknown = [t for t in tasks or [] if t not in known]
    if unknown:
        raise ValueError(f'unknown question type(s) {unknown}; known: {", ".join(known)}')
    taken: dict[str, int] = {}
    out = []
    for item in bench.items:
        if tasks and item.task not in tasks:
            continue
        if limit is not None and taken.get(item.task, 0) >= limit:
            continue
        taken[item.task] = taken.get(item.task, 0) + 1
        out.append(item)
    return out


def group_by_video(items: Sequence[QAItem]) -> list[tuple[Path, list[QAItem]]]:
    """Return (video, its items), videos in the order the items first name them."""
    groups: dict[str, list[QAItem]] = {}
    for item in items:
        groups.setdefault(item.meta['video'], []).append(item)
    return [(Path(v), its) for v, its in groups.items()]


class FramePublisher:
    """Publishes RGB frames on one image topic (reliable, like the launched node expects)."""

    def __init__(self, node: Any, topic: str) -> None:
        """Create the publisher on ``node``."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        self.topic = topic
        self._pub = node.create_publisher(
            Image, topic, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))

    def wait_for_subscriber(self, timeout_s: float) -> bool:
        """Return True once something subscribes to the topic."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self._pub.get_subscription_count() > 0:
                return True
            time.sleep(0.05)
        return False

    def publish(self, rgb: Any, stamp_ns: int) -> None:
        """Publish one frame stamped ``stamp_ns``."""
        from vlm3r_ros.node.ros_convert import rgb_to_image
        self._pub.publish(rgb_to_image(rgb, stamp_ns))


def stream_video(session: Any, publisher: FramePublisher, path: Path, base_ns: int,
                 stream: str, pace: str) -> VideoStats:
    """Publish one video's frames (all, or its 32 reference frames) paced on the node's
    status and wait until the node took them; return what happened."""
    from vlm3r_ros.tools.replay import StatusPacer
    stats = VideoStats(str(path), pace=pace)
    started = time.monotonic()
    info = video_info(path)
    stats.frames_total, stats.fps = info.frames, info.fps
    if info.frames < 1:
        stats.error = f'{path}: no frame decoded'
        return stats
    indices = None if stream == 'all' else reference_indices(info.frames).tolist()
    pacer: StatusPacer | None = None
    stamps: list[int] = []
    for n, (index, rgb) in enumerate(iter_frames(path, indices), start=1):
        stamp = base_ns + round(index / info.fps * 1e9)
        if stamps and stamp <= stamps[-1]:
            stamp = stamps[-1] + 1  # a repeated reference frame: the node needs a new stamp
        if pacer is None:
            window = 1 if pace == 'geometry' else max(
                1, min(INGEST_WINDOW, IN_FLIGHT_BYTES // max(1, rgb.nbytes)))
            pacer = StatusPacer(session.monitor, pace, window=window, timeout_s=30.0)
            pacer.start(10.0)
        publisher.publish(rgb, stamp)
        stamps.append(stamp)
        pacer(n)
    if pacer is not None:
        pacer.finish(len(stamps))
        stats.lost, stats.pace_timeouts = pacer.lost, pacer.timeouts
    stats.published = len(stamps)
    stats.window_ns = (stamps[0], stamps[-1]) if stamps else (0, 0)
    stats.seconds = time.monotonic() - started
    return stats


def evaluate_benchmark(session: Any, bench: BenchmarkSet, items: Sequence[QAItem],
                       publisher: FramePublisher, *, protocol: str = 'reference',
                       stream: str = 'sampled', budget: int = 0, timeout_s: float = 120.0,
                       parser: str = 'official',
                       on_answer: Callable[[int, Any], None] | None = None) -> Any:
    """Stream every video of ``items`` into the session's node, ask its questions in the
    video's time window, score them; return an ``EvalResult``."""
    from vlm3r_ros.tools.evaluate import EvalResult, ReplayStats, error_counts, score_answers
    log = session.log
    pace = 'ingest' if protocol == 'reference' else 'geometry'
    groups = group_by_video(items)
    streamed = StreamStats()
    answers = []
    ask_s = 0.0
    for k, (video, its) in enumerate(groups):
        stats = stream_video(session, publisher, video, BASE_NS - k * VIDEO_GAP_NS, stream, pace)
        streamed.videos.append(stats)
        trouble = ''.join([f', {stats.lost} lost' if stats.lost else '',
                           f', {stats.pace_timeouts} pacing timeouts'
                           if stats.pace_timeouts else ''])
        log(f'[{k + 1}/{len(groups)}] {video.name}: {stats.published} of {stats.frames_total} '
            f'frames published in {stats.seconds:.1f} s{trouble}; {len(its)} questions')
        started = time.monotonic()
        for item in its:
            answer = session.ask(item, budget, timeout_s, window_ns=stats.window_ns)
            answers.append(answer)
            if on_answer is not None:
                on_answer(len(answers) - 1, answer)
        ask_s += time.monotonic() - started
    report = score_answers(answers, parser)
    totals = streamed.totals()
    replay = ReplayStats(messages=totals['frames_published'],
                         frames=totals['frames_published'], pace=pace,
                         pace_timeouts=totals['pace_timeouts'], lost=totals['frames_lost'],
                         frames_received=totals['frames_published'] - totals['frames_lost'],
                         settled=True, replay_s=totals['stream_s'])
    status = session.monitor.status
    run = {'data_dir': str(bench.videos_dir), 'table': str(bench.table),
           'benchmark': bench.benchmark, 'protocol': protocol, 'stream': stream,
           'parser': parser, 'node': session.node_name,
           'launched': session.launched is not None,
           'model_profile': status.model_profile if status else '',
           'model_state': session.model_state, 'questions': len(answers),
           'ask_s': round(ask_s, 3), 'streaming': totals,
           'videos': [asdict(v) for v in streamed.videos]}
    return EvalResult(report, answers, error_counts(answers), replay, run)


def node_protocol(session: Any, timeout_s: float = 5.0) -> str | None:
    """Return the running node's ``protocol`` parameter, or None when it cannot be read."""
    from rcl_interfaces.srv import GetParameters
    client = session.node.create_client(GetParameters, f'{session.node_name}/get_parameters')
    try:
        if not client.wait_for_service(timeout_sec=timeout_s):
            return None
        response = session._call(client, GetParameters.Request(names=['protocol']), timeout_s)
        if response is None or not response.values:
            return None
        return response.values[0].string_value or None
    finally:
        session.node.destroy_client(client)


def run_benchmark(args: argparse.Namespace, out: Path) -> int:
    """The benchmark branch of ``vlm3r-eval`` (parsed ``args``); return the exit code."""
    import os
    import sys

    from vlm3r_ros.tools.evaluate import (EXIT_OK, EXIT_SETUP, EXIT_UNANSWERED,
                                          EvalSetupError, NodeSession, parse_params,
                                          summary_text, write_results)
    try:
        bench = load_benchmark(args.bag_dir, args.benchmark, args.videos)
        items = select_benchmark_items(bench, args.tasks, args.limit)
        if not items:
            raise EvalSetupError('no question left after --tasks/--limit')
        missing = sorted({str(i.meta['video']) for i in items
                          if not Path(i.meta['video']).is_file()})
        if missing:
            raise EvalSetupError(f'{len(missing)} video(s) missing, e.g. {", ".join(missing[:3])} '
                                 '(unpack the dataset\'s video archives into DATA_DIR or pass '
                                 '--videos)')
        overrides = parse_params(args.param)
    except (BenchmarkDataError, EvalSetupError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return EXIT_SETUP
    print(f'{bench.benchmark}: {len(items)} questions over '
          f'{len(group_by_video(items))} videos from {bench.table}')
    if args.launch:
        namespace = f'/vlm3r_eval_{os.getpid()}_{int(time.time() * 1000) % 100000}'
        params = benchmark_node_parameters(args.profile, namespace, args.protocol, args.stream,
                                           overrides)
        session = NodeSession(launch_params=params, namespace=namespace,
                              log_path=out / 'node.log', ready_timeout_s=args.ready_timeout)
        topic = params['image_topic']
    else:
        session = NodeSession(args.node, ready_timeout_s=args.ready_timeout)
        topic = args.image_topic
    try:
        with session:
            if not args.launch:
                running = node_protocol(session)
                if running is not None and running != args.protocol:
                    raise EvalSetupError(f'{session.node_name} runs protocol {running!r}, not '
                                         f'{args.protocol!r}: start it with -p '
                                         f'protocol:={args.protocol} (or pass --protocol '
                                         f'{running})')
            publisher = FramePublisher(session.node, topic)
            if not publisher.wait_for_subscriber(10.0):
                raise EvalSetupError(f'nothing subscribes to {topic}')
            result = evaluate_benchmark(session, bench, items, publisher,
                                        protocol=args.protocol, stream=args.stream,
                                        budget=args.budget, timeout_s=args.timeout,
                                        parser=args.parser)
    except EvalSetupError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return EXIT_SETUP
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return EXIT_SETUP
    if session.node_exit_code not in (None, 0):
        print(f'warning: the launched node exited with code {session.node_exit_code}')
    name = {'vsibench': 'VSI-Bench', 'vstibench': 'VSTI-Bench'}[bench.benchmark]
    paths = write_results(result, out, title=f'vlm3r_node on {name} ({args.protocol})')
    print(summary_text(result))
    print(f'wrote {", ".join(str(p) for p in paths.values())}')
    return EXIT_UNANSWERED if result.unanswered else EXIT_OK
