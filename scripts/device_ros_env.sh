#!/usr/bin/env bash
# On a GPU device machine (no registry; its python3 holds a CUDA torch): a virtual environment
# with ROS 2 Kilted from the wheels that scripts/device_wheels.sh packed into
# .whl/ros<tag>.tar.xz, the machine's own packages (torch, transformers, numpy, ...) kept
# visible, and this package's interfaces built with rosidl (scripts/setup.sh, offline).
#   bash scripts/device_ros_env.sh [VENV]        (default /tmp/vlm3r_rosenv)
# Then: VLM3R_VENV=VENV source scripts/env.sh. Exit 3 when the wheel pack is missing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-/tmp/vlm3r_rosenv}"
base_py="${PYTHON:-python3}"
say() { printf '[device_ros_env] %s\n' "$*"; }

tag="$("$base_py" -c 'import sys; print(f"{sys.version_info.major}{sys.version_info.minor}")')"
pack="$root/.whl/ros$tag.tar.xz"
if [ ! -f "$pack" ]; then
  say "no $pack: run scripts/device_wheels.sh ${tag:0:1}.${tag:1} on a machine with PyPI first"
  exit 3
fi
started=$(date +%s)
"$base_py" -m venv --without-pip "$venv"
py="$venv/bin/python"
base_site="$("$base_py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# The base interpreter's packages stay importable (after the venv's own), their .pth files too.
echo "import site; site.addsitedir('$base_site')" > "$site/_vlm3r_base_packages.pth"
wheels="$(mktemp -d)"
tar -xJf "$pack" -C "$wheels"
say "installing $(ls "$wheels" | wc -l) wheels into $venv"
"$base_py" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
  --prefix "$venv" "$wheels"/*.whl
rm -rf "$wheels"
VLM3R_VENV="$venv" VLM3R_OFFLINE=1 bash "$root/scripts/setup.sh"
say "ready in $(( $(date +%s) - started )) s: $venv"
