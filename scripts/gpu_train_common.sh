# Sourced by scripts/gpu_train_geometry.sh and gpu_train_vlm3r.sh (not run on its own): the
# steps both one-call GPU scripts share. The caller sets NAME (log tag), LOG (file name in
# $OUT), OUT_DEFAULT, EVAL_DEFAULT_S and IMPORT (the trainer module that must import).
#   1. time guard, log to $OUT/$LOG, environment (CUDA, or the CPU with ALLOW_CPU=1);
#   2. the training extras the device image lacks, from .whl/train/ when they are missing.
# Sets OUT, TOTAL_S, EVAL_S, PY, WORK, CPUS, DEVICE, PYTHONPATH; defines left() and say().
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-$PWD/$OUT_DEFAULT}"
mkdir -p "$OUT"
TOTAL_S="${TOTAL_S:-540}"
EVAL_S="${EVAL_S:-$EVAL_DEFAULT_S}"
PY="${PYTHON:-python3}"
WORK="${WORK:-$(mktemp -d)}"
T0=$(date +%s)
left() { echo $(( TOTAL_S - ($(date +%s) - T0) )); }
exec > >(tee -a "$OUT/$LOG") 2>&1
say() { printf '[%s %4ds] %s\n' "$NAME" "$(( $(date +%s) - T0 ))" "$*"; }
export PYTHONUNBUFFERED=1

# ---------------------------------------------------------------- 1. environment
CPUS=$(getconf _NPROCESSORS_ONLN)
say "host $(hostname), $CPUS cpus, work dir $WORK"
nvidia-smi -L 2>/dev/null || say 'nvidia-smi: none'
DEVICE=cuda
if ! "$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
  if [ "${ALLOW_CPU:-0}" != 1 ]; then say 'no CUDA device (ALLOW_CPU=1 runs on the CPU)'; exit 2; fi
  DEVICE=cpu
fi
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'

# ---------------------------------------------------------------- 2. extras
EXTRAS="$WORK/extras"
if ! "$PY" -c 'import datasets, transforms3d' 2>/dev/null && ls .whl/train/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --target "$EXTRAS" .whl/train/*.whl || exit $?
  say "installed $(ls .whl/train/*.whl | wc -l) carried wheels"
fi
export PYTHONPATH="$PWD:$EXTRAS${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import datasets, transforms3d, $IMPORT" || {
  say 'training imports fail: carry .whl (bash scripts/device_train_wheels.sh)'; exit 3; }
