#!/usr/bin/env bash
# Packs the training extras a GPU device machine's image lacks (it has torch, numpy, pyarrow,
# safetensors, OpenCV, but not these) into .whl/train/ for scripts/gpu_train_geometry.sh:
# datasets, dill, multiprocess, xxhash, transforms3d, wheels for CPython 3.12 (about 3 MB).
# .whl/ is ignored through .git/info/exclude; name it in the device call's carry.
#   bash scripts/device_train_wheels.sh [PYVER]     (run here, where pip reaches an index)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pyver="${1:-3.12}"
py="${PYTHON:-$root/.venv/bin/python}"
out="$root/.whl/train"
grep -qx '/.whl/' "$root/.git/info/exclude" 2>/dev/null || echo '/.whl/' >> "$root/.git/info/exclude"
mkdir -p "$out"
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  -d "$out" datasets dill multiprocess xxhash transforms3d
ls -l "$out"
