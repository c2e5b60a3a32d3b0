# Entry points for the wheel-based path (a machine with only Python). See README.md.
SHELL := /bin/bash
VENV ?= .venv
RUN := source scripts/env.sh &&

.PHONY: setup test demo bench bench-gpu clean dataset train-geometry eval-geometry

# The training recipe of the shipped small CUT3R (vlm3r_ros/weights/MODEL_CARD.md).
GEOMETRY_DATA ?= data/geometry
GEOMETRY_OUT ?= out/train_geometry
GEOMETRY_STEPS ?= 1150

setup:
	bash scripts/setup.sh

test: setup
	$(RUN) bash scripts/run_tests.sh $(ARGS)

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

clean:
	rm -rf build .pytest_cache
