# Entry points for the wheel-based path (a machine with only Python). See README.md.
SHELL := /bin/bash
VENV ?= .venv
RUN := source scripts/env.sh &&

.PHONY: setup test demo bench clean

setup:
	bash scripts/setup.sh

test: setup
	$(RUN) bash scripts/run_tests.sh $(ARGS)

demo: setup
	$(RUN) python -m vlm3r_ros.tools.demo $(ARGS)

bench: setup
	$(RUN) python -m benchmarks.run_all $(ARGS)

clean:
	rm -rf build .pytest_cache
