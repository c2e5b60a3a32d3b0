"""The package as `colcon build` installs it: where `ros2 run` / `ros2 launch` look.

Runs under `colcon test` (scripts/colcon_check.sh, called by CI), where the install space
is on AMENT_PREFIX_PATH and PYTHONPATH; in the plain suite, run from the checkout with no
install space in the ament index, it skips. `ros2 run vlm3r_ros X` executes
`<prefix>/lib/vlm3r_ros/X`; `ros2 launch vlm3r_ros vlm3r.launch.py` reads
`<prefix>/share/vlm3r_ros/launch/`; neither CLI ships as a wheel (README), so the test
checks those paths and runs the installed executables directly.
"""
import ast
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

try:
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    PREFIX = Path(get_package_prefix('vlm3r_ros'))
except (ImportError, PackageNotFoundError, OSError):  # OSError: no AMENT_PREFIX_PATH
    PREFIX = None

if PREFIX is None and os.environ.get('VLM3R_EXPECT_INSTALLED'):
    raise RuntimeError('VLM3R_EXPECT_INSTALLED is set but vlm3r_ros is in no install space')
pytestmark = pytest.mark.skipif(PREFIX is None, reason='vlm3r_ros is not in an install space '
                                '(run through scripts/colcon_check.sh)')


def console_scripts() -> list[str]:
    """Return the console-script names setup.py declares."""
    tree = ast.parse((ROOT / 'setup.py').read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == 'console_scripts':
                    return [ast.literal_eval(v).split('=')[0].strip() for v in value.elts]
    raise AssertionError('setup.py declares no console_scripts')


def test_every_entry_point_is_where_ros2_run_looks():
    lib = PREFIX / 'lib' / 'vlm3r_ros'
    names = console_scripts()
    assert 'vlm3r_node' in names and 'vlm3r-train' in names
    for name in names:
        path = lib / name
        assert path.is_file() and os.access(path, os.X_OK), f'{path} missing or not executable'


def test_launch_config_and_weights_are_installed():
    share = PREFIX / 'share' / 'vlm3r_ros'
    for rel in ('package.xml', 'launch/vlm3r.launch.py', 'config/vlm3r.yaml',
                'config/vlm3r.rviz', 'config/fastdds_large_data.xml'):
        assert (share / rel).is_file(), f'{share / rel} is not installed'
    assert (PREFIX / 'share' / 'ament_index' / 'resource_index' / 'packages'
            / 'vlm3r_ros').is_file()
    import vlm3r_ros
    from vlm3r_ros.action import SpatialQuery as QueryAction
    from vlm3r_ros.msg import SceneStatus
    from vlm3r_ros.srv import LoadScene, PlanRoute, SaveScene, SpatialQuery
    from vlm3r_ros.weights import CUT3R_SMALL, VLM3R_SMALL, VLM3R_SMALL_BLIND
    # The installed sources, not the checkout, with the generated interfaces beside them.
    assert Path(vlm3r_ros.__file__).resolve().is_relative_to(PREFIX.resolve())
    assert CUT3R_SMALL.is_file() and CUT3R_SMALL.resolve().is_relative_to(PREFIX.resolve())
    for release in (VLM3R_SMALL, VLM3R_SMALL_BLIND):
        assert (release / 'base' / 'model.safetensors').is_file(), release
        assert (release / 'adapter' / 'non_lora_trainables.safetensors').is_file(), release
    assert SceneStatus and SpatialQuery and PlanRoute and QueryAction and SaveScene and LoadScene


def test_installed_cli_and_node_run():
    lib = PREFIX / 'lib' / 'vlm3r_ros'
    out = subprocess.run([sys.executable, str(lib / 'vlm3r-ask'), '--help'],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and 'usage' in out.stdout.lower(), out.stderr
    ns = f'/installed{os.getpid()}'
    proc = subprocess.Popen(
        [sys.executable, str(lib / 'vlm3r_node'), '--ros-args', '--params-file',
         str(PREFIX / 'share' / 'vlm3r_ros' / 'config' / 'vlm3r.yaml'), '-r', f'__ns:={ns}',
         '-p', 'model_profile:=none', '-p', 'status_period_s:=0.2'],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        from ros_support import Collector, client_node
        from vlm3r_ros.msg import SceneStatus
        with client_node() as client:
            status = Collector(client, SceneStatus, f'{ns}/vlm3r_node/status').wait(timeout=30)
        assert status is not None, 'the installed node published no status'
        assert status.model_state == SceneStatus.MODEL_NOT_CONFIGURED
    finally:
        proc.send_signal(signal.SIGINT)
        log, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, log
