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


def test_rviz_config_shows_the_outputs_and_is_installed():
    import yaml
    config = yaml.safe_load((ROOT / 'config' / 'vlm3r.rviz').read_text())
    manager = config['Visualization Manager']
    assert manager['Global Options']['Fixed Frame'] == 'map'
    topics = {d['Topic']['Value']: d['Class'] for d in manager['Displays'] if 'Topic' in d}
    assert topics == {
        '/vlm3r_node/cloud': 'rviz_default_plugins/PointCloud2',
        '/vlm3r_node/keyframes': 'rviz_default_plugins/MarkerArray',
        '/vlm3r_node/route': 'rviz_default_plugins/Path',
        '/vlm3r_node/trajectory': 'rviz_default_plugins/Path',
        '/vlm3r_node/odometry': 'rviz_default_plugins/Odometry',
        '/vlm3r_node/free_space': 'rviz_default_plugins/Map',
    }
    # Latched outputs need a transient-local subscription in RViz too.
    for display in manager['Displays']:
        if display.get('Topic', {}).get('Value', '').endswith(
                ('cloud', 'keyframes', 'route', 'trajectory', 'free_space')):
            assert display['Topic']['Durability Policy'] == 'Transient Local', display['Name']
    # Installed with the package: colcon (CMake installs config/) and the wheel path.
    cmake = (ROOT / 'CMakeLists.txt').read_text()
    assert re.search(r'install\(DIRECTORY[^)]*\bconfig\b[^)]*DESTINATION share/\$\{PROJECT_NAME\}',
                     cmake)
    setup = (ROOT / 'setup.py').read_text()
    assert "'config/vlm3r.rviz'" in setup and "share/{package_name}/config" in setup
