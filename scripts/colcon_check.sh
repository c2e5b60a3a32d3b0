#!/usr/bin/env bash
# `colcon build` + `colcon test` of this package in a scratch workspace, as a ROS user
# would build it (CI runs this after the suite: `make colcon`).
#
# ament_cmake, rosidl and the message packages come from the Kilted wheels in the venv,
# colcon from colcon-common-extensions (PyPI). What differs from a distribution install:
# the wheels ship no setup.bash of their own (colcon warns that the venv in
# AMENT_PREFIX_PATH has no local_setup.*, harmless), and CMake needs the Python and NumPy
# paths spelled out. `colcon test` runs test/test_installed_package.py (installed
# executables, launch/config/weights under share/, the installed node on the graph): the
# whole suite already ran from the checkout. VLM3R_COLCON_TESTS=test runs all of it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VLM3R_VENV:-$root/.venv}"
py="$venv/bin/python"
py_ver="$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
py_tag="cp${py_ver/./}"
np_include="/opt/python/$py_tag-$py_tag/lib/python$py_ver/site-packages/numpy/_core/include"
[ -d "$np_include" ] || np_include="$("$py" -c 'import numpy; print(numpy.get_include())')"
ws="${VLM3R_COLCON_WS:-$(mktemp -d /tmp/vlm3r_colcon.XXXXXX)}"
tests="${VLM3R_COLCON_TESTS:-test/test_installed_package.py}"

mkdir -p "$ws/src"
ln -sfn "$root" "$ws/src/vlm3r_ros"
cd "$ws"
export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
export VLM3R_EXPECT_INSTALLED=1  # the installed-package test must not skip
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST RMW_IMPLEMENTATION=rmw_fastrtps_cpp
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( ($$ % 100) + 1 ))}"
echo "[colcon] build in $ws"
colcon build --packages-select vlm3r_ros --event-handlers console_cohesion- \
  --cmake-args -DBUILD_TESTING=ON -DCMAKE_BUILD_TYPE=Release \
  -DVLM3R_COLCON_TESTS="$tests" -DPython3_EXECUTABLE="$py" \
  -DPython3_NumPy_INCLUDE_DIR="$np_include" \
  -DCMAKE_INSTALL_RPATH="$ws/install/vlm3r_ros/lib;$venv/lib" -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON
echo "[colcon] test ($tests)"
colcon test --packages-select vlm3r_ros --event-handlers console_direct+
colcon test-result --verbose --all
