#!/usr/bin/env bash
# Runs the whole test suite with DDS kept on this machine and a domain id of its own.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
# A per-run domain (1..100) so parallel runs on one machine do not see each other.
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( ($$ % 100) + 1 ))}"
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
export PYTHONHASHSEED=0 OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec python -m pytest test -q -p no:cacheprovider "$@"
