"""Package metadata that colcon users depend on: package.xml, launch file, CMake install."""
import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_package_xml_is_format_3_and_lists_runtime_dependencies():
    root = ET.parse(ROOT / 'package.xml').getroot()
    assert root.get('format') == '3' and root.findtext('name') == 'vlm3r_ros'
    deps = {e.text for e in root if e.tag.endswith('depend')}
    imported = set()
    for path in (ROOT / 'vlm3r_ros').rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split('.')[0])
            elif isinstance(node, ast.Import):
                imported.update(a.name.split('.')[0] for a in node.names)
    ros_packages = {m for m in imported if m.endswith(('_msgs', '_interfaces')) or m in (
        'rclpy', 'launch', 'launch_ros')}
    missing = ros_packages - deps
    assert not missing, f'imported but not in package.xml: {sorted(missing)}'
    from catkin_pkg.package import parse_package
    parse_package(str(ROOT / 'package.xml'))  # the validation colcon/rosdep apply


def test_launch_file_declares_the_documented_arguments():
    tree = ast.parse((ROOT / 'launch' / 'vlm3r.launch.py').read_text())
    declared = {node.args[0].value for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, 'id', '') ==
                'DeclareLaunchArgument'}
    assert {'params_file', 'namespace', 'image_topic', 'use_sim_time', 'log_level'} <= declared


def test_cmake_installs_every_entry_point_script():
    cmake = (ROOT / 'CMakeLists.txt').read_text()
    setup = (ROOT / 'setup.py').read_text()
    scripts = set(re.findall(r"'([\w-]+) = vlm3r_ros", setup))
    for name in scripts:
        assert f'scripts/{name}' in cmake, name
        assert (ROOT / 'scripts' / name).exists(), name
