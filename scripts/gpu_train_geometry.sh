#!/usr/bin/env bash
# Trains the embedded default's small CUT3R on a lent GPU in ONE device call and brings the
# weights back (the GPU path of `make train-geometry`: the same dataset builder, trainer and
# flags; the lease is 15 minutes of device time in all, a call at most 10):
#   1. environment: nvidia-smi, torch and CUDA;
#   2. the training extras the device image lacks, from .whl/train/ (run
#      scripts/device_train_wheels.sh here first and carry [".whl"]);
#   3. the dataset: vlm3r-dataset on every core (QA skipped), the Makefile's scenes;
#   4. vlm3r-train-geometry --device cuda with rollouts growing 4 -> 8 -> 16 -> 24 views, for
#      the time left (--max-minutes; best weights by val loss; resumable ckpt.pt);
#   5. the RGB-only val checks of the new weights: benchmarks/pose_source_rgb.py and
#      keyframe_selection_rgb.py (the shipped weights' val numbers are in BENCHMARKS.md);
#   6. results in $OUT (7 files): best.safetensors summary.json metrics.jsonl loss.png
#      pose_val.json keyframes_val.json train_gpu.log.
# From a session with a device (device tool `run`, repository root):
#   command: bash scripts/gpu_train_geometry.sh     timeout_s: 600     carry: [".whl"]
# New weights are committed only when they beat the shipped ones on the val split.
# Knobs (environment): TOTAL_S (seconds for the whole call, default 540), EVAL_S (kept for
# step 5, default 150), DATASET_ARGS, TRAIN_ARGS (appended: later flags win), PYTHON (default
# python3), ALLOW_CPU=1 (no GPU: run on the CPU), TINY=1 (toy sizes, for the CPU dry run that
# test/test_gpu_train_script.py does before device time is spent).
# Exit: 0 all ran, 2 no CUDA device (and no ALLOW_CPU), else the failing step's exit code.
set -uo pipefail
NAME=gpu_train LOG=train_gpu.log OUT_DEFAULT=out/gpu_train_geometry EVAL_DEFAULT_S=150 IMPORT=vlm3r_ros.train.train_geometry
# shellcheck source=scripts/gpu_train_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/gpu_train_common.sh"  # steps 1-2

# ---------------------------------------------------------------- 3. dataset
if [ "${TINY:-0}" = 1 ]; then
  DATASET_DEFAULT='--train 2 --val 1 --test 0 --train-seconds 2 --eval-seconds 4 --width 64 --height 48 --workers 1'
  TRAIN_DEFAULT='--steps 2 --stages 2:1 --views-per-step 4 --val-sequences 1 --val-views 2 --eval-every 2 --workers 0 --threads 1'
  EVAL_LIMIT='--limit 1'
else
  DATASET_DEFAULT="--workers $CPUS"
  TRAIN_DEFAULT='--steps 3000 --stages 4:0.2,8:0.3,16:0.3,24:0.2 --views-per-step 96 --workers 8 --eval-every 250 --val-views 24 --val-sequences 16'
  EVAL_LIMIT=''
fi
DATA="$WORK/data"
say "dataset -> $DATA"
"$PY" -m vlm3r_ros.train.dataset --out "$DATA" --no-qa $DATASET_DEFAULT ${DATASET_ARGS:-} || exit $?

# ---------------------------------------------------------------- 4. training
RUN="$WORK/run"
MINUTES=$(( ($(left) - EVAL_S) / 60 ))
[ "$MINUTES" -ge 1 ] || MINUTES=1
say "training on $DEVICE for at most $MINUTES min -> $RUN"
"$PY" -m vlm3r_ros.train.train_geometry --data "$DATA" --out "$RUN" --device "$DEVICE" \
  --max-minutes "$MINUTES" $TRAIN_DEFAULT ${TRAIN_ARGS:-} || exit $?
for f in best.safetensors summary.json metrics.jsonl loss.png; do
  [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/$f"
done

# ---------------------------------------------------------------- 5. val checks
say "val checks ($(left) s left)"
timeout "$(( $(left) > 20 ? $(left) - 10 : 10 ))" "$PY" -m benchmarks.pose_source_rgb --data "$DATA" --split val \
  --weights "$RUN/best.safetensors" --out "$OUT/pose_val.json" $EVAL_LIMIT || say 'pose check stopped'
timeout "$(( $(left) > 20 ? $(left) - 10 : 10 ))" "$PY" -m benchmarks.keyframe_selection_rgb --data "$DATA" --split val \
  --weights "$RUN/best.safetensors" --out "$OUT/keyframes_val.json" $EVAL_LIMIT || say 'keyframe check stopped'
say "done: $(ls "$OUT" | tr '\n' ' ')"
