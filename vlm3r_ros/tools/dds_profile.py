"""The Fast DDS large-data profile (config/fastdds_large_data.xml) for publishing tools.

Fast DDS reads its XML profile when the process creates its first participant, from the
file named by ``FASTDDS_DEFAULT_PROFILES_FILE`` (``FASTRTPS_DEFAULT_PROFILES_FILE`` on
Fast DDS 2.x). :func:`apply_large_data_profile` sets it, before ``rclpy.init``, unless
the user already chose a profile or another RMW. The profile matters in the process
that publishes large messages (see the XML file's comment and README "Large images over
DDS"). Plain Python, no ROS import.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import MutableMapping

PROFILE_FILE = 'fastdds_large_data.xml'
PROFILE_VARS = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')
# Raw frames above this many bytes do not fit Fast DDS' default 512 KiB shared-memory
# segment in one piece (the profile's reason to exist); smaller ones travel fine.
LARGE_MESSAGE_BYTES = 256 * 1024


def large_data_profile() -> Path | None:
    """Return the shipped profile: the installed share directory, else the checkout."""
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.append(Path(get_package_share_directory('vlm3r_ros')) / 'config')
    except Exception:  # noqa: BLE001 - not installed with colcon / no ament index
        pass
    candidates.append(Path(__file__).resolve().parents[2] / 'config')
    for folder in candidates:
        if (folder / PROFILE_FILE).is_file():
            return folder / PROFILE_FILE
    return None


def apply_large_data_profile(environ: MutableMapping[str, str] | None = None,
                             profile: Path | None = None) -> str:
    """Point Fast DDS at the large-data profile unless a profile or another RMW is set.

    Returns a sentence saying what was done (for the tool's output). Call it before
    ``rclpy.init``; later it has no effect on participants that already exist.
    """
    env = os.environ if environ is None else environ
    for var in PROFILE_VARS:
        if env.get(var):
            return f'Fast DDS profile kept from {var}={env[var]}'
    rmw = env.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
    if 'fastrtps' not in rmw:
        return f'RMW_IMPLEMENTATION={rmw}: no Fast DDS profile applied'
    path = profile or large_data_profile()
    if path is None:
        return f'{PROFILE_FILE} not found: Fast DDS runs with its defaults'
    env[PROFILE_VARS[0]] = str(path)
    return f'Fast DDS large-data profile applied ({PROFILE_VARS[0]}={path})'
