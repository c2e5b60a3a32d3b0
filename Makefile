# Entry points for the wheel-based path (a machine with only Python). See README.md.
SHELL := /bin/bash
VENV ?= .venv
RUN := source scripts/env.sh &&

.PHONY: setup test colcon demo bench bench-gpu clean dataset train-geometry eval-geometry \
	dataset-vlm3r pretrain-vision train eval

# The training recipe of the shipped small CUT3R (vlm3r_ros/weights/MODEL_CARD.md).
GEOMETRY_DATA ?= data/geometry
GEOMETRY_OUT ?= out/train_geometry
GEOMETRY_STEPS ?= 1150

setup:
	bash scripts/setup.sh

test: setup
	$(RUN) bash scripts/run_tests.sh $(ARGS)

# colcon build + colcon test in a scratch workspace (the installed package's checks).
colcon: setup
	$(RUN) bash scripts/colcon_check.sh

demo: setup
	$(RUN) python -m vlm3r_ros.tools.demo $(ARGS)

bench: setup
	$(RUN) python -m benchmarks.run_all $(ARGS)

# Real-size GPU benchmark (benchmarks/gpu_realsize.py; BENCHMARKS.md 'GPU'). It needs a CUDA
# build of torch, which the wheel-based .venv (CPU torch) does not have: GPU_PYTHON defaults to
# the first of .venv/bin/python with CUDA, python3 with torch, .venv/bin/python (CPU: use
# ARGS='--size tiny'). On a lent device machine run benchmarks/gpu_oneshot.sh instead.
GPU_OUT ?= out/gpu_realsize.json
GPU_PYTHON ?= $(shell if $(VENV)/bin/python -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; \
  then echo $(VENV)/bin/python; elif python3 -c 'import torch' 2>/dev/null; then echo python3; \
  else echo $(VENV)/bin/python; fi)
bench-gpu:
	PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PYTHON) benchmarks/gpu_realsize.py \
	  --out $(GPU_OUT) $(ARGS)

dataset: setup
	$(RUN) vlm3r-dataset --out $(GEOMETRY_DATA) $(DATASET_ARGS)

# Renders the dataset (resumable), then trains (resumable: run again after an interruption).
train-geometry: dataset
	$(RUN) vlm3r-train-geometry --data $(GEOMETRY_DATA) --out $(GEOMETRY_OUT) \
	  --steps $(GEOMETRY_STEPS) $(ARGS)
	@echo "weights: $(GEOMETRY_OUT)/best.safetensors (make eval-geometry WEIGHTS=... to compare)"

WEIGHTS ?= vlm3r_ros/weights/cut3r_small.safetensors
eval-geometry: dataset
	$(RUN) vlm3r-eval-geometry --data $(GEOMETRY_DATA) --weights $(WEIGHTS) $(ARGS)

# The training recipe of the shipped small fused VLM-3R (vlm3r_ros/weights/MODEL_CARD_VLM3R.md):
# the QA dataset (train/val/test on disjoint seeds), dense vision pretraining, instruction
# tuning of the model and of its blind twin side by side (one core each), then the release
# directories are copied into vlm3r_ros/weights. Every stage resumes after an interruption.
VLM3R_DATA ?= data/vlm3r
VLM3R_DATASET_ARGS ?= --train 560 --val 16 --test 200 --train-seconds 12 --eval-seconds 12 \
  --qa-frames 8 --qa-per-task 12 --workers 2
VLM3R_TRAIN_ARGS ?= --steps 3000 --cache-workers 2
VLM3R_OUT ?= out/train_vlm3r
VLM3R_WEIGHTS := vlm3r_ros/weights
dataset-vlm3r: setup
	$(RUN) vlm3r-dataset --out $(VLM3R_DATA) $(VLM3R_DATASET_ARGS)

pretrain-vision: dataset-vlm3r
	$(RUN) OMP_NUM_THREADS=1 vlm3r-pretrain-vision --data $(VLM3R_DATA) --out out/pretrain_vision

train: pretrain-vision
	$(RUN) export OMP_NUM_THREADS=1 && \
	  vlm3r-train --data $(VLM3R_DATA) --out $(VLM3R_OUT) --cache-only $(VLM3R_TRAIN_ARGS) && \
	  (vlm3r-train --data $(VLM3R_DATA) --out $(VLM3R_OUT) $(VLM3R_TRAIN_ARGS) & \
	   vlm3r-train --data $(VLM3R_DATA) --out $(VLM3R_OUT)_blind --blind $(VLM3R_TRAIN_ARGS) & \
	   wait)
	rm -rf $(VLM3R_WEIGHTS)/vlm3r_small $(VLM3R_WEIGHTS)/vlm3r_small_blind
	cp -r $(VLM3R_OUT)/release $(VLM3R_WEIGHTS)/vlm3r_small
	cp -r $(VLM3R_OUT)_blind/release $(VLM3R_WEIGHTS)/vlm3r_small_blind
	@echo "shipped: $(VLM3R_WEIGHTS)/vlm3r_small{,_blind} (make eval for the table)"

# The held-out table of the shipped model beside chance, frequency, blind twin and shuffled
# frames (renders the dataset first when it is missing: the debiasing needs the training items).
eval: dataset-vlm3r
	$(RUN) vlm3r-eval-model --data $(VLM3R_DATA) --workers 2 $(ARGS)

clean:
	rm -rf build .pytest_cache
