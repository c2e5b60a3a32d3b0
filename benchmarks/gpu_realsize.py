"""Real-size GPU benchmark: the vlm3r-7b LMM and full-size CUT3R, against the chip's floor.

    python benchmarks/gpu_realsize.py --out out/gpu_realsize.json            # full size, GPU
    python benchmarks/gpu_realsize.py --size tiny --out /tmp/tiny.json       # same path, CPU
    make bench-gpu ARGS='--budget-s 420'

Builds, with random weights created directly on the target device (no host copy, nothing
read or downloaded), the ``vlm3r-7b`` architecture (``Vlm3rNet`` on the meta device, storage
allocated on the device, ``randomize_``) and CUT3R ``cut3r_512_dpt_4_64`` at 432x432 (the
VLM-3R input); ``--size tiny`` builds the tiny profile and the small CUT3R instead and runs
the same code in well under a minute on a CPU. Measured in one run (CUDA events after
warm-up; ``perf_counter`` on CPU):

* ceilings: dense matrix-product rate per dtype and device copy bandwidth;
* CUT3R streaming step ms/frame per dtype: eager, ``torch.compile``, CUDA graph (eager and
  compiled), the node's ``Cut3rStream`` path, ONNX Runtime CUDA EP where installed; state
  memory;
* per-frame visual encoding (SigLIP + fusion + projector + pooling + newlines) ms/frame;
* a first question over 32 keyframes: prefix prefill ms, time to first token, decode
  ms/token; repeated and new question on the same keyframes (prefix KV hit);
* peak device memory per stage and over all stages;
* the floor of each (max of FLOPs / matmul rate and bytes / copy bandwidth) and the ratio.

Results go to ``--out`` as JSON (rewritten after every stage, so a run stopped by a time
guard keeps what it measured) and a table is printed. ``--budget-s`` skips stages that would
not fit (each has an estimate of its seconds).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

if __package__ in (None, '') and str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks import gpu_cut3r as cut3r_runs  # noqa: E402
from benchmarks.gpu_llm import llm_stage  # noqa: E402
from benchmarks.gpu_timing import (Clock, MemoryMeter, copy_bandwidth, floor_ms,  # noqa: E402
                                   matmul_rate, module_bytes, ratio)
from vlm3r_ros.models.cut3r.config import Cut3rConfig  # noqa: E402
from vlm3r_ros.models.cut3r.model import Cut3rModel  # noqa: E402
from vlm3r_ros.models.loader import apply_matmul_precision  # noqa: E402

DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16, 'float32': torch.float32}
# The loader's numerics per dtype: float16 runs as the reference (TF32, fp16 RoPE rounding).
NUMERICS = {'float16': 'reference', 'bfloat16': 'precise', 'float32': 'precise'}


@dataclass(frozen=True)
class SizeSpec:
    """What one ``--size`` builds and how much it measures."""

    profile: str
    cut3r: str
    cut3r_image: tuple[int, int]
    resize_mode: str
    keyframes: int
    answer_tokens: int
    decode_tokens: int
    repeats: int
    cut3r_frames: int
    encode_frames: int
    matmul_size: int
    copy_bytes: int
    # Seconds each kind of stage is expected to need (to skip what does not fit the budget).
    need_s: dict[str, float]


SIZES: dict[str, SizeSpec] = {
    'full': SizeSpec(
        profile='vlm3r-7b', cut3r='official_512_dpt', cut3r_image=(432, 432),
        resize_mode='vlm3r', keyframes=32, answer_tokens=16, decode_tokens=32, repeats=3,
        cut3r_frames=30, encode_frames=20, matmul_size=8192, copy_bytes=4 << 30,
        need_s={'ceilings': 10, 'llm': 60, 'cut3r_eager': 30, 'cut3r_compile': 150,
                'onnx': 150}),
    'tiny': SizeSpec(
        profile='tiny', cut3r='small', cut3r_image=(160, 160), resize_mode='stretch',
        keyframes=32, answer_tokens=4, decode_tokens=6, repeats=2, cut3r_frames=4,
        encode_frames=3, matmul_size=256, copy_bytes=32 << 20,
        need_s={'ceilings': 1, 'llm': 5, 'cut3r_eager': 3, 'cut3r_compile': 10, 'onnx': 30}),
}


class Run:
    """The results document, its output file and the time budget."""

    def __init__(self, out: Path, budget_s: float, args: argparse.Namespace) -> None:
        """Start the document with the machine and the arguments."""
        self.out = out
        self.started = time.monotonic()
        self.budget_s = budget_s
        self.doc: dict[str, Any] = {'machine': machine(), 'args': vars(args) | {
            'out': str(args.out)}, 'ceilings': {}, 'cut3r': {}, 'llm': {}, 'floors': {},
            'memory': {}, 'skipped': [], 'errors': [], 'stage_seconds': {}}

    def left_s(self) -> float:
        """Seconds left of the budget."""
        return self.budget_s - (time.monotonic() - self.started)

    def stage(self, name: str, need_s: float, fn: Callable[[], None]) -> bool:
        """Run ``fn`` as stage ``name`` unless it would not fit; record errors; save."""
        if self.left_s() < need_s:
            self.doc['skipped'].append({'stage': name, 'reason': f'budget: {self.left_s():.0f} s '
                                        f'left, stage needs about {need_s:.0f} s'})
            self.save()
            return False
        began = time.monotonic()
        print(f'[gpu_realsize] {name} ...', flush=True)
        try:
            fn()
            ok = True
        except Exception as exc:  # noqa: BLE001 - one failing stage must not lose the others
            self.doc['errors'].append({'stage': name, 'error': f'{type(exc).__name__}: {exc}',
                                       'traceback': traceback.format_exc()[-4000:]})
            print(f'[gpu_realsize] {name} FAILED: {type(exc).__name__}: {exc}', flush=True)
            ok = False
        self.doc['stage_seconds'][name] = round(time.monotonic() - began, 2)
        free_memory()
        self.save()
        return ok

    def save(self) -> None:
        """Write the document (atomically) to the output path."""
        self.doc['wall_s'] = round(time.monotonic() - self.started, 2)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(self.out.suffix + '.tmp')
        tmp.write_text(json.dumps(self.doc, indent=1, default=str), encoding='utf8')
        os.replace(tmp, self.out)


def machine() -> dict[str, Any]:
    """Return what the results were measured on."""
    info: dict[str, Any] = {'python': platform.python_version(), 'torch': torch.__version__,
                            'platform': platform.platform(), 'cpus': os.cpu_count(),
                            'cuda': torch.cuda.is_available()}
    try:
        import transformers
        info['transformers'] = transformers.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                    sm_count=props.multi_processor_count,
                    capability=f'{props.major}.{props.minor}', cuda_runtime=torch.version.cuda)
    return info


def free_memory() -> None:
    """Drop unreachable objects and return cached device memory."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def frame_image(seed: int = 0) -> np.ndarray:
    """Return one random 480x640 RGB camera frame."""
    return np.random.default_rng(seed).integers(0, 256, (480, 640, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------- stages
def ceilings_stage(run: Run, clock: Clock, spec: SizeSpec, dtypes: list[str]) -> None:
    """Measure the matmul rate of every dtype in use (and float32 with/without TF32) and the
    copy bandwidth."""
    rates: dict[str, Any] = {}
    for name in sorted(set(dtypes) | {'float32'}):
        rates[name] = matmul_rate(clock, DTYPES[name], spec.matmul_size)
    if clock.cuda:
        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        rates['float32'] = matmul_rate(clock, torch.float32, spec.matmul_size)
        torch.backends.cuda.matmul.allow_tf32 = True
        rates['tf32'] = matmul_rate(clock, torch.float32, spec.matmul_size)
        torch.backends.cuda.matmul.allow_tf32 = old
    else:
        rates['tf32'] = rates['float32']
    run.doc['ceilings'] = {'matmul': rates, 'copy': copy_bandwidth(clock, spec.copy_bytes)}


def build_cut3r(spec: SizeSpec, device: torch.device) -> Cut3rModel:
    """Build CUT3R of ``spec`` with random weights allocated on ``device`` (float32)."""
    config = getattr(Cut3rConfig, spec.cut3r)()
    torch.manual_seed(0)
    with torch.device(device):
        model = Cut3rModel(config)
    return model.eval()


def _set_numerics(model: Cut3rModel, dtype_name: str) -> None:
    """Cast the backbone and switch TF32 / RoPE rounding as the loader does for this dtype."""
    numerics = NUMERICS[dtype_name]
    apply_matmul_precision(numerics)
    model.to_inference_dtype(DTYPES[dtype_name])
    model.set_rope_fp16_rounding(numerics == 'reference')


def cut3r_floor(run: Run, model: Cut3rModel, image: torch.Tensor, dtype_name: str) -> dict:
    """Return the floor of one steady-state step: backbone FLOPs at the dtype's rate, head
    FLOPs at the TF32 rate, weights read once at the copy bandwidth (the larger of both)."""
    total, head = cut3r_runs.head_flops(model, image)
    ceilings = run.doc['ceilings']
    nbytes = module_bytes(model)
    if total is None:
        return floor_ms(None, nbytes, ceilings, dtype_name)
    backbone = floor_ms(total - (head or 0), None, ceilings, dtype_name)
    head_part = floor_ms(head or 0, None, ceilings, 'tf32')
    memory = floor_ms(None, nbytes, ceilings, dtype_name)
    compute = sum(x['compute_floor_ms'] or 0.0 for x in (backbone, head_part))
    value = max(compute, memory['memory_floor_ms'] or 0.0)
    return {'flops': total, 'head_flops': head, 'bytes': nbytes,
            'compute_floor_ms': round(compute, 5),
            'memory_floor_ms': memory['memory_floor_ms'], 'floor_ms': round(value, 5),
            'bound': 'compute' if compute >= (memory['memory_floor_ms'] or 0.0) else 'memory'}


def cut3r_stage(run: Run, clock: Clock, meter: MemoryMeter, spec: SizeSpec,
                model: Cut3rModel, dtype_name: str, modes: list[str],
                compile_backend: str) -> None:
    """Measure the CUT3R step of ``model`` cast to ``dtype_name`` in each of ``modes``."""
    _set_numerics(model, dtype_name)
    image = cut3r_runs.step_input(model, spec.cut3r_image)
    frame = frame_image()
    entry = run.doc['cut3r'].setdefault(dtype_name, {
        'image_size': list(spec.cut3r_image), 'numerics': NUMERICS[dtype_name],
        'parameters': sum(p.numel() for p in model.parameters()), 'modes': {}})
    if 'floor' not in entry:
        entry['floor'] = cut3r_floor(run, model, image, dtype_name)
    floor = entry['floor']
    n, warm = spec.cut3r_frames, 3
    compiled: Any = None
    if any(m.startswith('compiled') for m in modes):
        # One compilation per dtype, shared by both compiled runners; the caches of the
        # previous dtype's compilation are dropped first (dynamo's per-code-object limit).
        torch._dynamo.reset()
        began = time.monotonic()
        compiled = cut3r_runs.compiled_fn(model, compile_backend)
        cut3r_runs.TensorStepper(model, compiled, image)()  # compiles (first frame)
        cut3r_runs.TensorStepper(model, compiled, image)()
        entry['compile_s'] = round(time.monotonic() - began, 1)
        entry['compile_backend'] = compile_backend
    for mode in modes:
        key = f'cut3r:{dtype_name}:{mode}'
        result: dict[str, Any] = {}
        with meter.stage(key):
            if mode in ('graph', 'compiled_graph') and not clock.cuda:
                result['skipped'] = 'CUDA graphs need a CUDA device'
            elif mode == 'onnx':
                available, why = cut3r_runs.onnx_cuda_available()
                if not available:
                    result['skipped'] = why
                else:
                    began = time.monotonic()
                    stepper = cut3r_runs.OnnxStepper(model, spec.cut3r_image, spec.resize_mode,
                                                     frame)
                    result['export_s'] = round(time.monotonic() - began, 1)
                    result['providers'] = stepper.providers
                    result['timing'] = clock.repeat(stepper, n, warm).to_json()
                    result['state_bytes'] = stepper.stream.state_nbytes
                    stepper.close()
            elif mode == 'stream':
                stepper = cut3r_runs.StreamStepper(model, spec.cut3r_image, spec.resize_mode,
                                                   frame)
                result['timing'] = clock.repeat(stepper, n, warm).to_json()
                result['state_bytes'] = stepper.stream.state_nbytes
                result['note'] = ('includes NumPy/PIL preprocessing of a 480x640 frame and the '
                                  'host copies of the point maps (what the node pays per frame)')
            else:
                fn = compiled if mode.startswith('compiled') else cut3r_runs.eager_fn(model)
                if mode.startswith('compiled'):
                    result['compile_s'] = entry['compile_s']
                    result['backend'] = compile_backend
                stepper = (cut3r_runs.GraphStepper(model, fn, image) if mode.endswith('graph')
                           else cut3r_runs.TensorStepper(model, fn, image))
                result['timing'] = clock.repeat(stepper, n, warm).to_json()
                if isinstance(stepper, cut3r_runs.TensorStepper):
                    result['state_bytes'] = sum(t.numel() * t.element_size()
                                                for t in (stepper.state, stepper.mem))
                del stepper, fn
        if 'timing' in result:
            ms = result['timing']['loop_ms']
            result['frames_per_s'] = round(1000 / ms, 2)
            result['ratio_to_floor'] = ratio(ms, floor)
        result['memory'] = meter.stages.get(key)
        entry['modes'][mode] = result
        run.save()
        free_memory()


# ------------------------------------------------------------------------------------ table
def table(doc: dict[str, Any]) -> str:
    """Return the printed summary: one row per measurement with its floor and ratio."""
    rows = [('stage', 'measured', 'floor', 'ratio', 'bound', 'peak GiB')]

    def add(name: str, ms: float | None, floor: dict | None, peak: float | None,
            unit: str = 'ms') -> None:
        rows.append((name, '-' if ms is None else f'{ms:.3f} {unit}',
                     '-' if not floor or floor.get('floor_ms') is None
                     else f'{floor["floor_ms"]:.3f} ms',
                     '-' if not floor or ratio(ms, floor) is None else f'{ratio(ms, floor):.2f}x',
                     (floor or {}).get('bound') or '-', '-' if peak is None else f'{peak:.2f}'))

    for dtype_name, entry in doc.get('cut3r', {}).items():
        for mode, res in entry.get('modes', {}).items():
            name = f'CUT3R {dtype_name} {mode} (ms/frame)'
            if 'timing' not in res:
                rows.append((name, 'skipped', '', '', '', res.get('skipped', '')[:40]))
                continue
            add(name, res['timing']['loop_ms'], entry.get('floor'),
                (res.get('memory') or {}).get('peak_allocated_gib'))
    for dtype_name, entry in doc.get('llm', {}).items():
        for key, label in (('encode', 'encode_frame (ms/frame)'),
                           ('prefill', 'prefix prefill (miss)'),
                           ('ttft', 'first token (miss)'),
                           ('first_question', 'first question (miss)'),
                           ('repeated_question', 'repeated question (hit)'),
                           ('new_question', 'new question (hit)'),
                           ('decode', 'decode (ms/token)')):
            res = entry.get(key)
            if not res:
                continue
            add(f'LMM {dtype_name} {label}', res.get('ms'), res.get('floor'),
                (res.get('memory') or {}).get('peak_allocated_gib'))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ['  '.join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, '  '.join('-' * w for w in widths))
    ceil = doc.get('ceilings', {})
    if ceil:
        rates = ', '.join(f'{k} {v["flop_per_s"] / 1e12:.3g} TFLOP/s'
                          for k, v in ceil.get('matmul', {}).items())
        lines.append(f'ceilings: matmul {rates}; copy '
                     f'{ceil.get("copy", {}).get("bytes_per_s", 0) / 1e12:.3g} TB/s (read+write)')
    mem = doc.get('memory', {})
    if mem.get('peak_allocated_gib_all') is not None:
        lines.append(f'peak allocated over all stages: {mem["peak_allocated_gib_all"]:.2f} GiB')
    for item in doc.get('skipped', []):
        lines.append(f'skipped {item["stage"]}: {item["reason"]}')
    for item in doc.get('errors', []):
        lines.append(f'ERROR in {item["stage"]}: {item["error"]}')
    return '\n'.join(lines)


# -------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', '--profile', dest='size', choices=sorted(SIZES),
                        default='full', help='full: vlm3r-7b + cut3r_512_dpt at 432x432; '
                        'tiny: the tiny profile and the small CUT3R (CPU smoke run)')
    parser.add_argument('--out', type=Path, required=True, help='JSON results path')
    parser.add_argument('--device', default='auto', help='auto (cuda if available), cuda, cpu')
    parser.add_argument('--dtypes', nargs='+', choices=sorted(DTYPES),
                        help='dtypes to measure (default: float16 bfloat16 on CUDA, '
                        'float32 on CPU); the first is the one every stage runs in')
    parser.add_argument('--cut3r-modes', nargs='+',
                        default=['eager', 'stream', 'graph', 'compiled', 'compiled_graph',
                                 'onnx'],
                        choices=['eager', 'stream', 'graph', 'compiled', 'compiled_graph',
                                 'onnx'], help='CUT3R runners to measure')
    parser.add_argument('--compile-backend', default=None,
                        help='torch.compile backend (default inductor; eager for --size tiny, '
                        'which only checks the path)')
    parser.add_argument('--skip', nargs='*', default=[], choices=['ceilings', 'llm', 'cut3r'],
                        help='leave these stage groups out')
    parser.add_argument('--budget-s', type=float, default=480.0,
                        help='skip stages that would not finish inside this many seconds')
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run every stage that fits the budget; return 1 when a stage failed."""
    args = build_parser().parse_args(argv)
    spec = SIZES[args.size]
    device = torch.device('cuda' if args.device == 'auto' and torch.cuda.is_available()
                          else 'cpu' if args.device == 'auto' else args.device)
    dtypes = args.dtypes or (['float16', 'bfloat16'] if device.type == 'cuda' else ['float32'])
    backend = args.compile_backend or ('eager' if args.size == 'tiny' else 'inductor')
    run = Run(args.out, args.budget_s, args)
    run.doc['size'] = asdict(spec)
    run.doc['device'] = str(device)
    clock, meter = Clock(device), MemoryMeter(device)

    def stages() -> None:
        """Run the stages in priority order (each skipped when it would not fit)."""
        need = spec.need_s
        if 'ceilings' not in args.skip:
            run.stage('ceilings', need['ceilings'],
                      lambda: ceilings_stage(run, clock, spec, dtypes))
        else:
            run.doc['skipped'].append({'stage': 'ceilings', 'reason': '--skip (no floors)'})
        llm_dtypes = [] if 'llm' in args.skip else list(dtypes)
        cut3r_dtypes = [] if 'cut3r' in args.skip else list(dtypes)

        def llm(dtype_name: str) -> None:
            llm_stage(run.doc, clock, meter, spec, dtype_name, device, frame_image())

        # Priority order: everything in the first dtype, then the second dtype, then the slow
        # compiled runners and ONNX (so a tight budget keeps the most important figures).
        if llm_dtypes:
            run.stage(f'llm:{llm_dtypes[0]}', need['llm'], lambda: llm(llm_dtypes[0]))
        model: Cut3rModel | None = None
        if cut3r_dtypes:
            def build() -> None:
                nonlocal model
                model = build_cut3r(spec, device)
            run.stage('cut3r:build', need['cut3r_eager'] / 3, build)
        fast = [m for m in args.cut3r_modes if m in ('eager', 'stream', 'graph')]
        slow = [m for m in args.cut3r_modes if m in ('compiled', 'compiled_graph')]
        if model is not None:
            for dtype_name in cut3r_dtypes:
                run.stage(f'cut3r:{dtype_name}:fast', need['cut3r_eager'],
                          lambda d=dtype_name: cut3r_stage(run, clock, meter, spec, model, d, fast,
                                                           backend))
        for dtype_name in llm_dtypes[1:]:
            run.stage(f'llm:{dtype_name}', need['llm'], lambda d=dtype_name: llm(d))
        if model is not None and slow:
            for dtype_name in cut3r_dtypes:
                run.stage(f'cut3r:{dtype_name}:compiled', need['cut3r_compile'],
                          lambda d=dtype_name: cut3r_stage(run, clock, meter, spec, model, d, slow,
                                                           backend))
        if model is not None and 'onnx' in args.cut3r_modes:
            run.stage('cut3r:onnx', need['onnx'],
                      lambda: cut3r_stage(run, clock, meter, spec, model, cut3r_dtypes[0],
                                          ['onnx'], backend))

    try:
        stages()
    except KeyboardInterrupt:  # the one-shot script's time guard (SIGINT)
        run.doc['errors'].append({'stage': 'interrupted', 'error': 'KeyboardInterrupt: '
                                  'stopped by the time guard; earlier stages kept'})
    run.doc['memory'] = meter.summary()
    run.save()
    print(table(run.doc), flush=True)
    print(f'[gpu_realsize] wrote {args.out} ({run.doc["wall_s"]:.1f} s)', flush=True)
    return 1 if run.doc['errors'] else 0


if __name__ == '__main__':
    sys.exit(main())
