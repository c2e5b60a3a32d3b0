#!/usr/bin/env bash
# Everything the real-size GPU issue measures, in ONE device call (the lease is 15 minutes of
# device time in all, a call at most 10): environment check, benchmarks/gpu_realsize.py
# (vlm3r-7b + full-size CUT3R, floors and ratios) and, when the ROS wheel pack is carried,
# the node end to end (benchmarks/gpu_node_e2e.py). A total time guard (TOTAL_S, default 520 s)
# keeps the call under 9 minutes; every result lands directly in $OUT (at most 8 files):
#   env.txt  oneshot.log  gpu_realsize.json  ros_env.log  node_e2e.json  node_e2e_node.log
#
# From a session with a device (device tool `run`, repository root):
#   command: bash benchmarks/gpu_oneshot.sh        timeout_s: 600
#   carry:   [".whl"]  only for the node stage (bash scripts/device_wheels.sh here, first)
# Knobs (environment): TOTAL_S, NODE_STAGE=auto|0|1 (auto: when .whl/ros<tag>.tar.xz is
# there), NODE_MIN_S (seconds the node stage needs, default 210), PYTHON (default python3),
# ROS_VENV (a ready ROS environment to use instead of building one),
# BENCH_ARGS (extra gpu_realsize.py arguments, e.g. '--skip cut3r'), ALLOW_CPU=1 (no GPU: a
# dry run of the whole script at --size tiny, to check it before device time is spent).
# Exit: 0 all ran, 2 no CUDA device, else the benchmark's exit code (partial JSON kept).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-$PWD/out/gpu_oneshot}"
mkdir -p "$OUT"
TOTAL_S="${TOTAL_S:-520}"
NODE_STAGE="${NODE_STAGE:-auto}"
NODE_MIN_S="${NODE_MIN_S:-210}"
PY="${PYTHON:-python3}"
T0=$(date +%s)
left() { echo $(( TOTAL_S - ($(date +%s) - T0) )); }
exec > >(tee -a "$OUT/oneshot.log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
say() { printf '[oneshot %4ds] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }

# ---------------------------------------------------------------- 1. environment
{
  echo "date: $(date -u +%FT%TZ)  host: $(hostname)  cpus: $(nproc)"
  uname -a
  nvidia-smi -L || echo 'nvidia-smi -L failed'
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm,clocks.max.sm,power.limit \
    --format=csv || true
  for tool in gcc g++ cmake make nvcc; do printf '%s: %s\n' "$tool" "$(command -v $tool || echo missing)"; done
  df -h /tmp | tail -1
  free -g | head -2
  timeout 120 "$PY" - <<'EOF'
import importlib, platform, sys
print('python', platform.python_version(), sys.executable)
import torch
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print('device', p.name, f'{p.total_memory / 2**30:.1f} GiB', 'sm', p.multi_processor_count,
          f'cc {p.major}.{p.minor}')
for name in ('transformers', 'tokenizers', 'safetensors', 'triton', 'onnx', 'onnxscript',
             'onnxruntime', 'PIL', 'cv2', 'numpy'):
    try:
        mod = importlib.import_module(name)
        print(name, getattr(mod, '__version__', '?'))
    except Exception as exc:
        print(name, 'MISSING', type(exc).__name__, exc)
try:
    import onnxruntime
    print('onnxruntime providers', onnxruntime.get_available_providers())
except Exception:
    pass
EOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
SIZE=full
if ! grep -q 'available True' "$OUT/env.txt"; then
  if [ "${ALLOW_CPU:-0}" != 1 ]; then
    say 'no CUDA device visible to torch: stopping here (env.txt says why)'
    exit 2
  fi
  SIZE=tiny  # ALLOW_CPU=1: a dry run of this script at tiny size on a CPU
  say 'no CUDA device: ALLOW_CPU=1 dry run at --size tiny'
fi

# ---------------------------------------------------------------- 2. ROS env (background, CPU)
tag="$("$PY" -c 'import sys; print(f"{sys.version_info.major}{sys.version_info.minor}")')"
ros_pid=''
ROS_VENV="${ROS_VENV:-}"
if [ -n "$ROS_VENV" ] && [ "$NODE_STAGE" != 0 ]; then
  say "using the ready ROS environment $ROS_VENV"
  true & ros_pid=$!
elif [ "$NODE_STAGE" = 1 ] || { [ "$NODE_STAGE" = auto ] && [ -f ".whl/ros$tag.tar.xz" ]; }; then
  ROS_VENV=/tmp/vlm3r_rosenv
  say "building the ROS environment in the background (log ros_env.log)"
  cores="$(nproc)"
  pin=''
  [ "$cores" -gt 4 ] && pin="taskset -c 4-$((cores - 1))"
  ( $pin nice -n 10 env PYTHON="$PY" timeout "$(( $(left) - 60 ))" \
      bash scripts/device_ros_env.sh "$ROS_VENV" > "$OUT/ros_env.log" 2>&1 ) &
  ros_pid=$!
else
  say "node stage off (NODE_STAGE=$NODE_STAGE, .whl/ros$tag.tar.xz $( [ -f ".whl/ros$tag.tar.xz" ] && echo present || echo absent))"
fi

# ---------------------------------------------------------------- 3. real-size benchmark
reserve=15
[ -n "$ros_pid" ] && reserve="$NODE_MIN_S"
bench_s=$(( $(left) - reserve ))
say "gpu_realsize.py with ${bench_s} s (budget $((bench_s - 25)) s)"
bench_pin=''
[ "$(nproc)" -gt 4 ] && [ -n "$ros_pid" ] && bench_pin='taskset -c 0-3'  # the build has 4-
# shellcheck disable=SC2086
timeout --signal=INT --kill-after=10 "$bench_s" $bench_pin "$PY" benchmarks/gpu_realsize.py \
  --size "$SIZE" --out "$OUT/gpu_realsize.json" --budget-s "$((bench_s - 25))" ${BENCH_ARGS:-}
bench_rc=$?
say "gpu_realsize.py exit $bench_rc"
nvidia-smi --query-gpu=memory.used,clocks.sm,temperature.gpu,power.draw --format=csv || true

# ---------------------------------------------------------------- 4. node end to end
if [ -n "$ros_pid" ]; then
  wait "$ros_pid"
  ros_rc=$?
  if [ "$ros_rc" != 0 ]; then
    say "ROS environment failed (exit $ros_rc): node stage skipped; tail of ros_env.log:"
    tail -20 "$OUT/ros_env.log"
  elif [ "$(left)" -lt 90 ]; then
    say "only $(left) s left: node stage skipped"
  else
    say "node end to end with $(( $(left) - 10 )) s"
    (
      export VLM3R_VENV="$ROS_VENV"
      # shellcheck disable=SC1091
      source scripts/env.sh
      export ROS_DOMAIN_ID=42
      timeout --signal=INT --kill-after=10 "$(( $(left) - 10 ))" python benchmarks/gpu_node_e2e.py \
        --size "$SIZE" --out "$OUT/node_e2e.json" --inprocess "$OUT/gpu_realsize.json" \
        --ready-timeout "$(( $(left) - 60 ))"
    )
    say "node stage exit $?"
  fi
fi
say "done in $(( $(date +%s) - T0 )) s; results in $OUT"
exit "$bench_rc"
