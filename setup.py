"""Python packaging for the wheel-based path (`scripts/setup.sh`); colcon uses CMakeLists.txt."""
from setuptools import find_packages, setup

package_name = 'vlm3r_ros'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(include=[package_name, f'{package_name}.*']),
    # The trained embedded default and its model card travel with the package.
    package_data={f'{package_name}.weights': [
        '*.safetensors', '*.md', '*.json', '*.png',
        # The small VLM-3R and its blind twin in the release layout (base/ + adapter/).
        'vlm3r_small/*/*', 'vlm3r_small_blind/*/*']},
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{package_name}']),
        (f'share/{package_name}', ['package.xml']),
        (f'share/{package_name}/config', ['config/vlm3r.yaml', 'config/vlm3r.rviz',
                                                 'config/fastdds_large_data.xml']),
    ],
    install_requires=['setuptools'],
    zip_safe=False,
    maintainer='vlm3r_ros maintainers',
    maintainer_email='maintainers@vlm3r-ros.dev',
    description='3D spatial intelligence from a robot RGB camera (CUT3R + VLM-3R) for ROS 2.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'vlm3r_node = vlm3r_ros.node.vlm3r_node:main',
            'vlm3r-ask = vlm3r_ros.tools.ask:main',
            'vlm3r-plan = vlm3r_ros.tools.plan:main',
            'vlm3r-scene = vlm3r_ros.tools.scene:main',
            'vlm3r-replay = vlm3r_ros.tools.replay:main',
            'vlm3r-eval = vlm3r_ros.tools.evaluate:main',
            'vlm3r-map = vlm3r_ros.tools.route_map_cli:main',
            'vlm3r-dataset = vlm3r_ros.train.dataset:main',
            'vlm3r-train-geometry = vlm3r_ros.train.train_geometry:main',
            'vlm3r-eval-geometry = vlm3r_ros.train.eval_geometry:main',
            'vlm3r-pretrain-vision = vlm3r_ros.train.vision_pretrain:main',
            'vlm3r-probe-vision = vlm3r_ros.train.vision_probe:main',
            'vlm3r-train = vlm3r_ros.train.train_vlm3r:main',
            'vlm3r-eval-model = vlm3r_ros.train.eval_vlm3r:main',
        ],
    },
)
