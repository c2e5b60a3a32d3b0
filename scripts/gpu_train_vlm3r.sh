#!/usr/bin/env bash
# Reproduces the small fused VLM-3R's whole recipe (`make train` + `make eval`) on a lent GPU
# machine in ONE device call, so that a session with a device can try a change to it at
# full data size in minutes instead of an hour on 2 cores:
#   1. environment (nvidia-smi, torch and CUDA);
#   2. the training extras the device image lacks, from .whl/train/ (run
#      scripts/device_train_wheels.sh here first and carry [".whl"]);
#   3. the QA dataset on every core (the Makefile's scenes and QA settings);
#   4. dense vision pretraining (CPU threads), the frozen towers' feature caches (every core),
#      then instruction tuning of the model and of its blind twin side by side on the GPU
#      (--device cuda, --max-minutes for the time left);
#   5. the held-out evaluation (vlm3r-eval-model: model, blind twin, shuffled frames,
#      frequency, chance, bootstrap intervals) on every core;
#   6. results in $OUT (6 files): release.tar (vlm3r_small/ and vlm3r_small_blind/ in the
#      release layout), eval_test.json, metrics.jsonl, metrics_blind.jsonl, vision.json,
#      train_vlm3r_gpu.log.
# From a session with a device (device tool `run`, repository root):
#   command: bash scripts/gpu_train_vlm3r.sh     timeout_s: 600     carry: [".whl"]
# New weights are committed only when they beat the shipped ones on the val split; the
# held-out table then goes into MODEL_CARD_VLM3R.md.
# Knobs (environment): TOTAL_S (default 540), EVAL_S (kept for step 5, default 120),
# DATASET_ARGS, PRETRAIN_ARGS, TRAIN_ARGS (appended: later flags win), EVAL_ARGS, PYTHON
# (default python3), ALLOW_CPU=1 (no GPU: run on the CPU), TINY=1 (toy sizes: the CPU dry run
# of test/test_gpu_train_script.py).
# Exit: 0 all ran, 2 no CUDA device (and no ALLOW_CPU), else the failing step's exit code.
set -uo pipefail
NAME=gpu_vlm3r LOG=train_vlm3r_gpu.log OUT_DEFAULT=out/gpu_train_vlm3r EVAL_DEFAULT_S=120 IMPORT=vlm3r_ros.train.train_vlm3r
# shellcheck source=scripts/gpu_train_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/gpu_train_common.sh"  # steps 1-2

# ---------------------------------------------------------------- 3. dataset
if [ "${TINY:-0}" = 1 ]; then
  DATASET_DEFAULT='--train 4 --val 3 --test 2 --train-seconds 2 --eval-seconds 2 --qa-frames 4 --qa-per-task 2 --shard-size 4 --workers 1'
  PRETRAIN_DEFAULT='--steps 3 --batch 2 --eval-scenes 1 --log-every 1'
  TRAIN_DEFAULT='--steps 3 --batch 4 --eval-every 2 --val-items 8 --log-every 1 --warmup-steps 1 --cache-workers 1'
  EVAL_DEFAULT='--samples 20 --workers 1'
else
  # The Makefile's recipe (VLM3R_DATASET_ARGS, VLM3R_TRAIN_ARGS), on every core.
  DATASET_DEFAULT="--train 560 --val 16 --test 200 --train-seconds 12 --eval-seconds 12 --qa-frames 8 --qa-per-task 12 --workers $CPUS"
  PRETRAIN_DEFAULT=''
  TRAIN_DEFAULT="--steps 3000 --cache-workers $(( CPUS > 2 ? CPUS - 2 : 1 ))"
  EVAL_DEFAULT="--workers $CPUS"
fi
DATA="$WORK/data"
say "dataset -> $DATA"
"$PY" -m vlm3r_ros.train.dataset --out "$DATA" $DATASET_DEFAULT ${DATASET_ARGS:-} || exit $?

# ---------------------------------------------------------------- 4. training
say 'vision pretraining'
"$PY" -m vlm3r_ros.train.vision_pretrain --data "$DATA" --out "$WORK/vision" \
  $PRETRAIN_DEFAULT ${PRETRAIN_ARGS:-} || exit $?
COMMON="--data $DATA --vision $WORK/vision/vision.safetensors $TRAIN_DEFAULT ${TRAIN_ARGS:-}"
say 'feature caches'
"$PY" -m vlm3r_ros.train.train_vlm3r $COMMON --out "$WORK/full" --cache-only || exit $?
MINUTES=$(( ($(left) - EVAL_S) / 60 ))
[ "$MINUTES" -ge 1 ] || MINUTES=1
say "tuning the model and its blind twin on $DEVICE for at most $MINUTES min"
"$PY" -m vlm3r_ros.train.train_vlm3r $COMMON --out "$WORK/full" --device "$DEVICE" \
  --max-minutes "$MINUTES" & full=$!
"$PY" -m vlm3r_ros.train.train_vlm3r $COMMON --out "$WORK/blind" --blind --device "$DEVICE" \
  --max-minutes "$MINUTES" & blind=$!
wait $full || exit $?
wait $blind || exit $?
mkdir -p "$WORK/release"
cp -r "$WORK/full/release" "$WORK/release/vlm3r_small"
cp -r "$WORK/blind/release" "$WORK/release/vlm3r_small_blind"
tar -C "$WORK/release" -cf "$OUT/release.tar" vlm3r_small vlm3r_small_blind
cp "$WORK/full/metrics.jsonl" "$OUT/metrics.jsonl"
cp "$WORK/blind/metrics.jsonl" "$OUT/metrics_blind.jsonl"
cp "$WORK/vision/eval.json" "$OUT/vision.json"  # held-out per-patch accuracy

# ---------------------------------------------------------------- 5. evaluation
say "held-out evaluation ($(left) s left)"
timeout "$(( $(left) > 20 ? $(left) - 10 : 10 ))" "$PY" -m vlm3r_ros.train.eval_vlm3r --data "$DATA" \
  --model "$WORK/release/vlm3r_small" --blind-model "$WORK/release/vlm3r_small_blind" \
  --out "$OUT/eval_test.json" $EVAL_DEFAULT ${EVAL_ARGS:-} || say 'evaluation stopped'
say "done: $(ls "$OUT" | tr '\n' ' ')"
