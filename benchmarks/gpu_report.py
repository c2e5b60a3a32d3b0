"""The GPU section of BENCHMARKS.md, from a ``benchmarks/gpu_realsize.py`` result.

``make bench`` (``benchmarks/run_all.py``) appends ``section()``: the measured tables when
``benchmarks/results/gpu_realsize.json`` (a device run's JSON, copied there and committed) is
present, else a 'GPU (not yet measured)' section saying how to measure. Also a CLI:

    python -m benchmarks.gpu_report out/gpu_oneshot/gpu_realsize.json [node_e2e.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / 'benchmarks' / 'results' / 'gpu_realsize.json'
NODE_RESULT = ROOT / 'benchmarks' / 'results' / 'node_e2e.json'

HOW_TO = """\
How it is measured (one device call, `benchmarks/gpu_oneshot.sh`): an environment check, then
`benchmarks/gpu_realsize.py` builds the `vlm3r-7b` architecture with random weights allocated
directly on the GPU (`build_network(init='empty')` + `randomize_`; no host copy, nothing
downloaded) and CUT3R `cut3r_512_dpt_4_64` at 432x432 (the VLM-3R input), and measures with
CUDA events after warm-up:

- ceilings of the same run: dense matmul rate (8192^3, random operands) per dtype, device copy
  bandwidth (4 GiB, bytes read + written);
- CUT3R streaming step ms/frame in float16 and bfloat16: eager `Cut3rModel.step`, the node's
  `Cut3rStream` path (preprocessing and host copies included), one CUDA graph per step,
  `torch.compile` (inductor) and a CUDA graph of the compiled step, ONNX Runtime's CUDA EP
  where installed; state memory;
- per-frame visual encoding (SigLIP + fusion + projector + pooling + newlines) ms/frame;
- questions over 32 keyframes (6720 visual tokens): prefix prefill, first token, a first
  question (16 tokens), a repeated and a new question on the same keyframes (prefix KV hit),
  decode ms/token (fixed-length decoding: random weights);
- peak GPU memory per stage; the floor of each figure (max of FLOPs / matmul rate and bytes /
  copy bandwidth: analytic for the Qwen2 LLM, `FlopCounterMode` for CUT3R and the encoder) and
  the ratio to it.

With the ROS wheel pack carried (`bash scripts/device_wheels.sh` first, `carry: [".whl"]`) the
same call builds a ROS environment there (`scripts/device_ros_env.sh`, in the background) and
runs `benchmarks/gpu_node_e2e.py`: random 7B-shaped weights written in the official layout,
a synthetic bag replayed into `vlm3r_node`, questions through its SpatialQuery service, GPU
memory after deactivate. Check everything on a CPU first: `make bench-gpu ARGS='--size tiny'`,
`test/test_bench_gpu_smoke.py`, and `ALLOW_CPU=1 PYTHON=.venv/bin/python bash
benchmarks/gpu_oneshot.sh` (the whole script at tiny size). Results: copy the returned
`gpu_realsize.json` (and `node_e2e.json`) to `benchmarks/results/` and run `make bench`.
"""


def _fmt(value: float | None, digits: int = 2, unit: str = '') -> str:
    """Return ``value`` rounded, or '-'."""
    return '-' if value is None else f'{value:.{digits}f}{unit}'


def _rows(doc: dict[str, Any]) -> list[str]:
    """Return the Markdown table of every measured figure with its floor and ratio."""
    out = ['| what | measured | floor | ratio | bound | peak GiB |',
           '|---|---:|---:|---:|---|---:|']
    for dtype, entry in doc.get('cut3r', {}).items():
        floor = entry.get('floor') or {}
        for mode, res in entry.get('modes', {}).items():
            name = f'CUT3R {dtype} {mode}, ms/frame'
            if 'timing' not in res:
                out.append(f'| {name} | skipped: {res.get("skipped", "")} | | | | |')
                continue
            ms = res['timing']['loop_ms']
            peak = (res.get('memory') or {}).get('peak_allocated_gib')
            out.append(f'| {name} ({res.get("frames_per_s", 0):.1f} frames/s) | {ms:.2f} ms '
                       f'| {_fmt(floor.get("floor_ms"), 3, " ms")} '
                       f'| {_fmt(res.get("ratio_to_floor"), 2, "x")} '
                       f'| {floor.get("bound") or "-"} | {_fmt(peak)} |')
    labels = (('encode', 'encode_frame, ms/frame'), ('prefill', 'prefix prefill (miss)'),
              ('ttft', 'first token (miss)'), ('first_question', 'first question (miss)'),
              ('repeated_question', 'repeated question (hit)'),
              ('new_question', 'new question (hit)'), ('decode', 'decode, ms/token'))
    for dtype, entry in doc.get('llm', {}).items():
        for key, label in labels:
            res = entry.get(key)
            if not res:
                continue
            floor = res.get('floor') or {}
            peak = (res.get('memory') or {}).get('peak_allocated_gib')
            out.append(f'| LMM {dtype} {label} | {res["ms"]:.2f} ms '
                       f'| {_fmt(floor.get("floor_ms"), 3, " ms")} '
                       f'| {_fmt(res.get("ratio_to_floor"), 2, "x")} '
                       f'| {floor.get("bound") or "-"} | {_fmt(peak)} |')
    return out


def measured_section(doc: dict[str, Any], node: dict[str, Any] | None = None) -> str:
    """Return the GPU section for a result document (and a node_e2e.json, if any)."""
    m = doc.get('machine', {})
    ceil = doc.get('ceilings', {})
    rates = ', '.join(f'{k} {v["flop_per_s"] / 1e12:.0f} TFLOP/s'
                      for k, v in ceil.get('matmul', {}).items())
    copy = ceil.get('copy', {}).get('bytes_per_s')
    size = doc.get('size', {})
    lines = [f'## GPU: {size.get("profile", "?")} LMM and CUT3R {size.get("cut3r", "?")} at '
             f'{"x".join(str(v) for v in size.get("cut3r_image", []))} '
             '(benchmarks/gpu_realsize.py)', '',
             f'Machine: {m.get("gpu", "?")} ({m.get("gpu_memory_gib", "?")} GiB, '
             f'{m.get("sm_count", "?")} SMs), CUDA {m.get("cuda_runtime", "?")}, torch '
             f'{m.get("torch", "?")}, transformers {m.get("transformers", "?")}, Python '
             f'{m.get("python", "?")}; random weights, {doc.get("wall_s", 0):.0f} s run.', '',
             f'Ceilings measured in the same run: matmul {rates}; copy '
             f'{_fmt(copy / 1e12 if copy else None, 2)} TB/s (read + write).', '']
    lines += _rows(doc)
    lines.append('')
    mem = doc.get('memory', {})
    if mem.get('peak_allocated_gib_all') is not None:
        lines.append(f'- peak allocated over all stages: {mem["peak_allocated_gib_all"]:.2f} GiB')
    for item in doc.get('skipped', []):
        lines.append(f'- skipped {item["stage"]}: {item["reason"]}')
    for item in doc.get('errors', []):
        lines.append(f'- error in {item["stage"]}: {item["error"]}')
    if node and 'error' not in node:
        lat = node.get('question_latency_s', {})
        gpu = {k: ', '.join(f'{n} {_fmt(v, 0)} MiB' for n, v in (d or {}).items())
               for k, d in node.get('gpu_memory_mib', {}).items()}
        lines += ['', f'Node end to end ({node.get("gpu")}): model ready after '
                  f'{node.get("node_ready_s")} s; replay {node.get("replay", {}).get("frames")} '
                  f'frames at {node.get("replay", {}).get("frames_per_s")} frames/s; question '
                  f'latency through the service: first {lat.get("first")} s, later median '
                  f'{lat.get("later_median")} s ({lat.get("answered")}/{lat.get("asked")} '
                  f'answered); GPU memory after the questions: {gpu.get("after_questions")}; '
                  f'after deactivate: {gpu.get("after_deactivate")}.']
    elif node:
        lines += ['', f'Node end to end failed: {node["error"]}']
    lines += ['', HOW_TO]
    return '\n'.join(lines)


def section(path: Path = RESULT, node_path: Path = NODE_RESULT) -> str:
    """Return the measured section when ``path`` exists, else the not-yet-measured one."""
    if path.is_file():
        node = json.loads(node_path.read_text()) if node_path.is_file() else None
        return measured_section(json.loads(path.read_text()), node)
    return '\n'.join(['## GPU (not yet measured)', '',
                      'No GPU run has been recorded: every figure in this file is from a CPU. The '
                      'real-size path (vlm3r-7b, full-size CUT3R) is prepared and checked at '
                      'tiny size on the CPU only; no GPU number is claimed here.', '', HOW_TO])


def main(argv: list[str] | None = None) -> int:
    """Print the section for the given result files."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else RESULT
    node = Path(args[1]) if len(args) > 1 else NODE_RESULT
    print(section(path, node))
    return 0


if __name__ == '__main__':
    sys.exit(main())
