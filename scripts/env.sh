# Source this to use the wheel-based environment in a shell: `source scripts/env.sh`.
_vlm3r_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_vlm3r_venv="${VLM3R_VENV:-$_vlm3r_root/.venv}"
# shellcheck disable=SC1091
source "$_vlm3r_venv/bin/activate"
export LD_LIBRARY_PATH="$_vlm3r_venv/lib:$_vlm3r_root/build/install/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
unset _vlm3r_root _vlm3r_venv
