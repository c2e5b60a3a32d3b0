"""The node end to end at real size: a synthetic bag replayed into vlm3r_node, questions through
its SpatialQuery service, GPU memory before and after deactivate.

    python benchmarks/gpu_node_e2e.py --out out/node_e2e.json [--size full|tiny]
                                      [--questions 6] [--inprocess out/gpu_realsize.json]

Everything is the package's own machinery: random weights in the ``vlm3r-7b`` architecture
are written in the official layout with the checkpoint writers (``save_base_checkpoint``
with the fusion block, CUT3R ``save_official_layout``), the node loads them as it would
real ones (``vlm3r_base_path``, ``cut3r_weights``), the bag comes from ``eval.bags.write_bag``
and ``tools.evaluate.NodeSession`` launches the node, replays the bag and asks. ``--size
tiny`` runs the same path with the tiny architecture on the CPU (weights written the same
way, ``tiny_weights_path``). Needs a ROS environment (``scripts/env.sh``; on a device machine
``scripts/device_ros_env.sh``). Writes one JSON document; the node's log goes beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, '') and str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import torch  # noqa: E402

from benchmarks.gpu_llm import build_model  # noqa: E402
from vlm3r_ros.models.cut3r.checkpoint import save_official_layout  # noqa: E402
from vlm3r_ros.models.cut3r.config import Cut3rConfig  # noqa: E402
from vlm3r_ros.models.cut3r.model import Cut3rModel  # noqa: E402
from vlm3r_ros.models.profiles import get_profile  # noqa: E402
from vlm3r_ros.models.vlm3r.checkpoint import save_base_checkpoint  # noqa: E402

SIZES = {
    # profile, CUT3R config, node parameters naming the weights, weight dtype on disk
    'full': ('vlm3r-7b', 'official_512_dpt', 'vlm3r_base_path', 'float16'),
    'tiny': ('tiny', 'small', 'tiny_weights_path', 'float32'),
}


def write_random_weights(size: str, root: Path, device: torch.device) -> dict[str, Any]:
    """Write random weights of ``size``'s architecture; return node parameters and timings."""
    profile_name, cut3r_name, base_param, dtype = SIZES[size]
    started = time.monotonic()
    profile = get_profile(profile_name, device=str(device), dtype=dtype)
    model = build_model(profile, device)
    base = root / 'vlm3r_base'
    save_base_checkpoint(model, base, max_shard_bytes=2 << 30, include_fusion=True)
    del model
    torch.manual_seed(0)
    with torch.device(device):
        cut3r = Cut3rModel(getattr(Cut3rConfig, cut3r_name)())
    cut3r_path = save_official_layout(cut3r, root / 'cut3r_random.safetensors')
    del cut3r
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    files = [p for p in root.rglob('*') if p.is_file()]
    return {'params': {base_param: str(base), 'cut3r_weights': str(cut3r_path)},
            'write_s': round(time.monotonic() - started, 1),
            'bytes_on_disk': sum(p.stat().st_size for p in files)}


def make_bag(root: Path, seconds: float, rate_hz: float) -> Path:
    """Write a synthetic room walk with ground-truth questions (the demo's scene); return it."""
    from vlm3r_ros.eval.bags import write_bag
    from vlm3r_ros.eval.scenes import make_scene, make_trajectory
    scene = make_scene(3)
    trajectory = make_trajectory(scene, seconds=seconds, rate_hz=rate_hz, seed=3)
    out = root / 'bag_dir'
    write_bag(scene, trajectory, out, width=320, height=240, qa_seed=3,
              qa_kwargs={'max_per_task': 1})
    return out


def gpu_memory_mib(pid: int) -> dict[str, float | None]:
    """Return nvidia-smi's GPU memory of process ``pid`` and of the whole device (MiB).

    ``process`` is None when nvidia-smi lists no such process (none holding memory, or
    processes not visible from here); ``device`` counts every process on the GPU.
    """
    out: dict[str, float | None] = {'process': None, 'device': None}
    if shutil.which('nvidia-smi') is None:
        return out

    def query(*args: str) -> list[list[str]]:
        try:
            text = subprocess.run(['nvidia-smi', *args, '--format=csv,noheader,nounits'],
                                  capture_output=True, text=True, timeout=20,
                                  check=False).stdout
        except (OSError, subprocess.SubprocessError):
            return []
        return [[p.strip() for p in line.split(',')] for line in text.splitlines() if line]

    for row in query('--query-compute-apps=pid,used_memory'):
        if len(row) == 2 and row[0] == str(pid) and row[1].replace('.', '', 1).isdigit():
            out['process'] = float(row[1])
    rows = query('--query-gpu=memory.used')
    if rows and rows[0] and rows[0][0].replace('.', '', 1).isdigit():
        out['device'] = float(rows[0][0])
    return out


def deactivate(session: Any, timeout_s: float = 60.0) -> dict[str, Any]:
    """Deactivate the node through its lifecycle service; return the outcome and its time."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    client = session.node.create_client(ChangeState, f'{session.node_name}/change_state')
    started = time.monotonic()
    if not client.wait_for_service(timeout_sec=10.0):
        return {'ok': False, 'error': 'no change_state service'}
    request = ChangeState.Request()
    request.transition.id = Transition.TRANSITION_DEACTIVATE
    response = session._call(client, request, timeout_s)  # noqa: SLF001 - same client helper
    return {'ok': bool(response is not None and response.success),
            'seconds': round(time.monotonic() - started, 3)}


def inprocess_figures(path: Path | None) -> dict[str, Any] | None:
    """Return the in-process question latencies of a gpu_realsize.py result, if given."""
    if path is None or not path.is_file():
        return None
    doc = json.loads(path.read_text())
    out = {}
    for dtype, entry in doc.get('llm', {}).items():
        out[dtype] = {k: entry[k]['ms'] for k in ('first_question', 'repeated_question',
                                                  'new_question', 'decode') if k in entry}
        out[dtype]['keyframes'] = doc.get('size', {}).get('keyframes')
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Do the whole stage; return the results document."""
    from vlm3r_ros.tools.evaluate import (NodeSession, load_bag_dir, node_parameters,
                                          select_items)
    device = torch.device('cuda' if torch.cuda.is_available() and args.size == 'full'
                          else 'cpu')
    work = Path(args.work)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    doc: dict[str, Any] = {'size': args.size, 'device': str(device),
                           'gpu': torch.cuda.get_device_name(0) if device.type == 'cuda'
                           else None}
    weights = write_random_weights(args.size, work, device)
    doc['weights'] = {k: v for k, v in weights.items() if k != 'params'}
    began = time.monotonic()
    info = load_bag_dir(make_bag(work, args.seconds, args.rate_hz))
    doc['bag'] = {'frames': info.num_frames, 'seconds': round(info.duration_s, 2),
                  'write_s': round(time.monotonic() - began, 1)}
    items = select_items(info.items, limit=1)[:args.questions]
    profile = SIZES[args.size][0]
    namespace = f'/vlm3r_gpu_e2e_{os.getpid()}'
    overrides = dict(weights['params'])
    overrides.update({'device': 'cuda' if device.type == 'cuda' else 'cpu',
                      'keyframe_budget': str(args.keyframes)})
    params = node_parameters(info, profile, namespace, overrides)
    log_path = Path(args.out).with_name('node_e2e_node.log')
    started = time.monotonic()
    with NodeSession(launch_params=params, namespace=namespace, log_path=log_path,
                     ready_timeout_s=args.ready_timeout, log=print) as session:
        doc['node_ready_s'] = round(time.monotonic() - started, 1)
        doc['model_state_ready'] = session.model_state
        pid = session.launched.proc.pid
        stats = session.replay(info)
        doc['replay'] = {'frames': stats.frames, 'replay_s': round(stats.replay_s, 2),
                         'settle_s': round(stats.settle_s, 2), 'pace': stats.pace,
                         'geometry_frames': stats.geometry_frames,
                         'frames_per_s': round(stats.frames / stats.replay_s, 2)
                         if stats.replay_s else None}
        status = session.monitor.status
        doc['keyframes_in_node'] = int(status.keyframe_count) if status else None
        answers = []
        for item in items:
            t0 = time.monotonic()
            answer = session.ask(item, budget=args.keyframes, timeout_s=args.timeout)
            answers.append({'task': item.task, 'round_trip_s': round(time.monotonic() - t0, 4),
                            'node_elapsed_s': round(answer.elapsed_s, 4),
                            'error': answer.error_name, 'keyframes': answer.keyframes})
        doc['answers'] = answers
        ok = [a['round_trip_s'] for a in answers if a['error'] == 'OK']
        doc['question_latency_s'] = {
            'first': ok[0] if ok else None,
            'later_median': statistics.median(ok[1:]) if len(ok) > 1 else None,
            'answered': len(ok), 'asked': len(answers)}
        doc['gpu_memory_mib'] = {'after_questions': gpu_memory_mib(pid)}
        doc['deactivate'] = deactivate(session)
        time.sleep(2.0)  # the unload runs on the node's side after the transition answers
        doc['gpu_memory_mib']['after_deactivate'] = gpu_memory_mib(pid)
    doc['node_exit_code'] = session.node_exit_code
    doc['inprocess'] = inprocess_figures(args.inprocess)
    shutil.rmtree(work, ignore_errors=True)
    return doc


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', choices=sorted(SIZES), default='full')
    parser.add_argument('--out', type=Path, required=True, help='JSON results path')
    parser.add_argument('--work', default='/tmp/vlm3r_node_e2e',
                        help='scratch folder for the weights and the bag (removed after)')
    parser.add_argument('--questions', type=int, default=6)
    parser.add_argument('--keyframes', type=int, default=32)
    parser.add_argument('--seconds', type=float, default=12.0, help='bag length (s)')
    parser.add_argument('--rate-hz', type=float, default=5.0, help='bag frame rate')
    parser.add_argument('--timeout', type=float, default=120.0, help='seconds per answer')
    parser.add_argument('--ready-timeout', type=float, default=300.0,
                        help='seconds for the node to load its model')
    parser.add_argument('--inprocess', type=Path, help='gpu_realsize.py JSON to compare with')
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the stage and write the JSON; return 0 when every question was answered."""
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    try:
        doc = run(args)
    except Exception as exc:  # noqa: BLE001 - report what failed in the JSON
        import traceback
        doc = {'error': f'{type(exc).__name__}: {exc}', 'traceback': traceback.format_exc()}
    doc['wall_s'] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, default=str), encoding='utf8')
    print(json.dumps({k: doc.get(k) for k in ('error', 'node_ready_s', 'replay',
                                               'question_latency_s', 'gpu_memory_mib',
                                               'deactivate', 'wall_s')}, indent=1))
    latency = doc.get('question_latency_s') or {}
    return 0 if 'error' not in doc and latency.get('answered') == latency.get('asked') else 1


if __name__ == '__main__':
    sys.exit(main())
