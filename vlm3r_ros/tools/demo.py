"""`make demo`: a synthetic room, the real node, real service calls, scores.

    python -m vlm3r_ros.tools.demo [--out out/demo] [--profile tiny] [--regenerate]

Generates (or reuses) a small deterministic synthetic bag with ground-truth questions in
``<out>/data`` (a 24 s walk through a furnished room at 5 Hz, 320x240, RGB only: no
depth, no poses), starts vlm3r_node on the embedded default profile, replays the bag into
it, asks every question through the SpatialQuery service, prints each answer beside the
ground truth, the per-task scores beside chance and the shipped blind twin (the same
small model trained on question text only), compares the
trajectory the node built from the trained monocular geometry with the true camera path,
and calls PlanRoute once.
Results (results.json/.csv, scores.png, answers.jsonl, node.log) go to ``<out>/results``.
Everything here is :mod:`vlm3r_ros.tools.evaluate`'s machinery; this file only chooses
the data and prints.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vlm3r_ros.eval.bags import write_bag
from vlm3r_ros.eval.qa import QAItem
from vlm3r_ros.eval.scenes import Scene, make_scene, make_trajectory
from vlm3r_ros.eval.scoring import Report, score_items
from vlm3r_ros.eval.trajectory_check import check_trajectory, first_camera_to_world
from vlm3r_ros.tools.evaluate import (Answer, BagInfo, EvalResult, EvalSetupError, evaluate,
                                      load_bag_dir, open_session, summary_text,
                                      write_results)
from vlm3r_ros.weights import VLM3R_SMALL, VLM3R_SMALL_EVAL

# Scene seed 3 yields questions for all 15 VSI-Bench and VSTI-Bench tasks at this size.
DEMO_SETTINGS: dict[str, Any] = {
    'scene_seed': 3, 'trajectory_seed': 3, 'qa_seed': 3, 'seconds': 24.0, 'rate_hz': 5.0,
    'width': 320, 'height': 240, 'per_task': 3, 'storage': 'sqlite3', 'with_pose': False,
    'with_depth': False}
STAMP_FILE = 'demo_settings.json'


def ensure_demo_bag(data_dir: Path, settings: dict[str, Any] = DEMO_SETTINGS,
                    regenerate: bool = False) -> tuple[BagInfo, bool]:
    """Return (the demo bag's info, whether it was generated now).

    An existing bag is reused when it was written with the same ``settings``; otherwise
    ``data_dir`` (the demo's own folder) is replaced.
    """
    stamp = data_dir / STAMP_FILE
    if not regenerate and stamp.is_file() and (data_dir / 'qa.json').is_file():
        try:
            if json.loads(stamp.read_text(encoding='utf8')) == settings:
                return load_bag_dir(data_dir), False
        except (ValueError, EvalSetupError):
            pass  # unreadable or stale: write it again
    if data_dir.exists():
        shutil.rmtree(data_dir)
    scene = make_scene(settings['scene_seed'])
    trajectory = make_trajectory(scene, seconds=settings['seconds'], rate_hz=settings['rate_hz'],
                                 seed=settings['trajectory_seed'])
    write_bag(scene, trajectory, data_dir, storage=settings['storage'],
              with_pose=settings['with_pose'], with_depth=settings['with_depth'],
              width=settings['width'],
              height=settings['height'], qa_seed=settings['qa_seed'],
              qa_kwargs={'max_per_task': settings['per_task']})
    stamp.write_text(json.dumps(settings, indent=1), encoding='utf8')
    return load_bag_dir(data_dir), True


def _short(text: str, width: int) -> str:
    text = ' '.join(text.split())
    return text if len(text) <= width else text[:width - 3] + '...'


def print_answer(index: int, answer: Answer, total: int) -> None:
    """Print one question with the model's answer beside the ground truth."""
    item = answer.item
    # repr() keeps an untrained model's control characters off the terminal.
    got = _short(repr(answer.answer), 24) if answer.error_code == 0 \
        else f'[{answer.error_name}]'
    truth = str(item.answer)
    if item.answer_type == 'option':
        truth += f' ({_short(item.answer_text, 20)})'
    print(f'{index + 1:>3}/{total} {_short(item.task, 27):<27} {_short(item.question, 44):<44} '
          f'model: {got:<24}  truth: {truth}', flush=True)


def route_goal(info: BagInfo) -> tuple[str, np.ndarray | None]:
    """Return (goal text, goal centre) for the route demo: the object with a category of
    its own that the questions mention most."""
    scene = Scene.from_dict(info.doc['scene'])
    unique = set(scene.unique_categories())
    mentions = Counter(i for item in info.items for i in item.object_ids
                       if scene.object(i).category in unique)
    if not mentions:
        return 'the door', None
    obj = scene.object(sorted(mentions.items(), key=lambda kv: (-kv[1], kv[0]))[0][0])
    return f'the {obj.category}', np.asarray(obj.center)


def unusable_answers(result: EvalResult) -> int:
    """Return how many OK answers gave no valid number or option letter (scored 0)."""
    return sum(1 for a, s in zip(result.answers, result.report.items)
               if a.error_code == 0 and s.parsed == '')


def blind_report(items: Sequence[QAItem], parser: str = 'official') -> Report | None:
    """Return the shipped blind twin's scores on ``items`` (question text only, no frames,
    the node's decoding: likeliest option letter, greedy numbers), or None when the blind
    twin is not shipped in this checkout."""
    from vlm3r_ros.train.eval_vlm3r import load_release, predict
    from vlm3r_ros.weights import VLM3R_SMALL_BLIND
    if not (VLM3R_SMALL_BLIND / 'base').is_dir():
        return None
    blind = load_release(VLM3R_SMALL_BLIND)
    predictions = {item.id: str(predict(blind, item, [], prefix_key='blind')) for item in items}
    return score_items(items, predictions, parser=parser)


def comparison_table(node: Report, blind: Report | None) -> str:
    """Return per-task scores of the node beside the blind twin and chance (percent)."""
    blind_of = {t.task: t.score for t in blind.tasks} if blind is not None else {}
    head = f'{"task":<32} {"n":>4} {"node":>7} {"blind":>7} {"chance":>7}'
    lines = [head, '-' * len(head)]
    for t in node.tasks:
        other = f'{100 * blind_of[t.task]:7.1f}' if t.task in blind_of else f'{"-":>7}'
        lines.append(f'{t.task:<32} {t.n:>4} {100 * t.score:7.1f} {other} '
                     f'{100 * t.chance:7.1f}')
    other = f'{100 * blind.overall:7.1f}' if blind is not None else f'{"-":>7}'
    lines.append(f'{"overall (mean over task groups)":<32} {len(node.items):>4} '
                 f'{100 * node.overall:7.1f} {other} {100 * node.overall_chance:7.1f}')
    return '\n'.join(lines)


def held_out_summary() -> str:
    """Return a sentence on the shipped small VLM-3R's held-out evaluation (its model
    card's table, from ``VLM3R_SMALL_EVAL``), or a pointer to the card when it is missing."""
    try:
        doc = json.loads(VLM3R_SMALL_EVAL.read_text(encoding='utf8'))
        model, blind = (doc['summary'][k]['overall'] for k in ('model', 'blind'))
        low, high = doc['intervals']['differences']['model-blind']
    except (OSError, ValueError, KeyError, TypeError):
        return 'Its held-out evaluation is in vlm3r_ros/weights/MODEL_CARD_VLM3R.md.'
    verdict = ('above' if low > 0 else 'below' if high < 0 else 'not distinguishable from')
    return (f'Held out (MODEL_CARD_VLM3R.md: {doc["test_items"]} questions on '
            f'{doc["intervals"]["scenes"]} unseen scenes) it scores {100 * model:.1f}% '
            f'against {100 * blind:.1f}% for its blind twin, {verdict} it (95 % interval of '
            f'the difference [{100 * low:.1f}, {100 * high:.1f}] points)'
            + ('; its answers come mostly from question-text priors, not from what it sees.'
               if low <= 0 else '.'))


def honesty_note(result: EvalResult, profile: str, weights_configured: bool,
                 blind: Report | None = None) -> str:
    """Return the plain statement about what the scores of this profile mean."""
    report = result.report
    ok = result.errors.get('OK', 0)
    score = (f'overall (combined over both benchmarks, ours) {100 * report.overall:.1f}% '
             f'against chance {100 * report.overall_chance:.1f}%')
    if blind is not None:
        score += f' and the blind twin {100 * blind.overall:.1f}%'
    if profile == 'tiny' and not weights_configured:
        if not (VLM3R_SMALL / 'base').is_dir():
            return (
                'PLEASE NOTE: the tiny default profile runs the real CUT3R + VLM-3R '
                'architecture with the trained small CUT3R, but this checkout has no trained '
                'small VLM-3R (vlm3r_ros/weights/vlm3r_small; make train), so its language '
                'model is randomly initialised and the answers are noise: '
                f'{unusable_answers(result)} of {ok} answers were not even a valid number or '
                f'option letter (scored 0); {score}.')
        return (
            'PLEASE NOTE: the tiny default profile is a small model trained on 2 CPU cores: '
            'the shipped small CUT3R (keyframes, trajectory and route above come from its '
            'monocular depth, placed with poses tracked from the images) and the shipped '
            'small VLM-3R. '
            + held_out_summary() + ' This one room has few questions per task, so the '
            f'scores above are noisy: {score}. It does not approach VLM-3R-7B; '
            'model_profile vlm3r-7b with local weights runs the real model.')
    return f'Scores of profile {profile}: {score}.'


def trajectory_report(session: Any, info: BagInfo, timeout_s: float = 5.0) -> str:
    """Return a line comparing the node's trajectory (``~/trajectory``) with the truth."""
    from nav_msgs.msg import Path as PathMsg
    from rclpy.qos import DurabilityPolicy, QoSProfile
    got: list[Any] = []
    qos = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    sub = session.node.create_subscription(PathMsg, f'{session.node_name}/trajectory',
                                           got.append, qos)
    try:
        end = time.monotonic() + timeout_s
        while not got and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        session.node.destroy_subscription(sub)
    if not got or not got[-1].poses:
        return 'trajectory: none received from the node'
    points = np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z]
                       for p in got[-1].poses])
    true_poses = np.asarray(info.doc['trajectory']['poses'], dtype=np.float64)
    check = check_trajectory(points, true_poses)
    return (f'trajectory from RGB alone: {check.points} graph nodes, {check.predicted_length_m:.1f} m '
            f'long (true camera path {check.true_length_m:.1f} m); nodes lie '
            f'{check.mean_deviation_m:.2f} m (mean) / {check.max_deviation_m:.2f} m (max) from '
            'the true path, with no alignment fitted')


def print_route(response: Any, goal: str, goal_centre: np.ndarray | None,
                first_pose: np.ndarray | None = None) -> None:
    """Print the PlanRoute result: steps and length, or the error code.

    ``first_pose`` (the first frame's true camera-to-world pose) maps a path planned in
    CUT3R's world (RGB only: the first camera) into the scene's world for the check.
    """
    from vlm3r_ros.pipeline.errors import ErrorCode
    print(f'\nPlanRoute to {goal!r}:')
    if response is None:
        print('  no response from the plan_route service')
        return
    if not response.success:
        print(f'  error {ErrorCode(response.error_code).name}: {response.message}')
        return
    for i, step in enumerate(response.steps):
        print(f'  {i + 1}. {step}')
    print(f'  path: {len(response.path.poses)} poses in {response.path.header.frame_id}, '
          f'{response.length_m:.2f} m ({response.elapsed_s:.2f} s)')
    if response.model_steps:
        print('  model steps: ' + '; '.join(_short(s, 40) for s in response.model_steps))
    if goal_centre is not None and response.path.poses:
        p = response.path.poses[-1].pose.position
        end = np.array([p.x, p.y, p.z])
        if first_pose is not None:
            end = first_camera_to_world(end, first_pose)
        miss = math.hypot(end[0] - goal_centre[0], end[1] - goal_centre[1])
        print(f'  the path ends {miss:.2f} m (in the floor plane) from the real {goal[4:]}')


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    parser = argparse.ArgumentParser(prog='vlm3r-demo', description=__doc__.splitlines()[0])
    parser.add_argument('--out', type=Path, default=Path('out/demo'),
                        help='demo folder (default out/demo)')
    parser.add_argument('--profile', default='tiny', choices=('tiny', 'vlm3r-7b', 'none'),
                        help='model_profile of the node (default: tiny, the embedded default)')
    parser.add_argument('--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='extra node parameter, e.g. tiny_weights_path:=/path')
    parser.add_argument('--regenerate', action='store_true', help='write the bag again')
    parser.add_argument('--ready-timeout', type=float, default=120.0,
                        help='seconds to wait for the node and its model (default 120)')
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return 0 when every question got a response, 1 otherwise."""
    args = build_parser().parse_args(argv)
    args.launch, args.node = True, '/vlm3r_node'
    started = time.monotonic()
    data_dir, results_dir = args.out / 'data', args.out / 'results'
    info, fresh = ensure_demo_bag(data_dir, regenerate=args.regenerate)
    print(f'{"generated" if fresh else "reusing"} synthetic bag {info.bag_path}: '
          f'{info.num_frames} frames {DEMO_SETTINGS["width"]}x{DEMO_SETTINGS["height"]} at '
          f'{DEMO_SETTINGS["rate_hz"]:g} Hz, {len(info.items)} questions over '
          f'{len({i.task for i in info.items})} tasks ({time.monotonic() - started:.1f} s)')
    goal, goal_centre = route_goal(info)
    try:
        session = open_session(args, info, results_dir)
        with session:
            result = evaluate(session, info, info.items,
                              on_answer=lambda i, a: print_answer(i, a, len(info.items)))
            print('\n' + trajectory_report(session, info))
            route = session.plan_route(goal)
            first_pose = None if info.pose_topic else np.asarray(
                info.doc['trajectory']['poses'][0], dtype=np.float64)
            print_route(route, goal, goal_centre, first_pose)
    except (EvalSetupError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    paths = write_results(result, results_dir, title=f'vlm3r_node ({args.profile}) on the '
                          'synthetic demo room')
    print()
    print(summary_text(result))
    weights = any(p.split(':=')[0] in ('tiny_weights_path', 'cut3r_weights') for p in args.param)
    blind = blind_report(info.items, result.report.parser) if args.profile == 'tiny' \
        and not weights else None
    print('\nper task: the node beside the blind twin (same size and training budget, '
          'question text only) and chance')
    print(comparison_table(result.report, blind))
    print('\n' + honesty_note(result, args.profile, weights, blind))
    print(f'\nresults: {results_dir} ({", ".join(p.name for p in paths.values())}, node.log)')
    print(f'demo finished in {time.monotonic() - started:.1f} s')
    return 1 if result.unanswered else 0


if __name__ == '__main__':
    sys.exit(main())
