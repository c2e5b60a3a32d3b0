"""Launch vlm3r_node with its parameters file (ROS 2 Jazzy/Kilted installs).

ros2 launch vlm3r_ros vlm3r.launch.py image_topic:=/camera/color/image_raw namespace:=robot1
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    """Return the launch description: one vlm3r_node with overridable arguments."""
    args = [
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution([FindPackageShare('vlm3r_ros'), 'config',
                                                'vlm3r.yaml']),
            description='Parameters file (vlm3r_node: ros__parameters: form).'),
        DeclareLaunchArgument('namespace', default_value='', description='Node namespace.'),
        DeclareLaunchArgument('image_topic', default_value='/camera/image_raw',
                              description='Colour image topic.'),
        DeclareLaunchArgument('image_transport', default_value='raw',
                              description='raw or compressed.'),
        DeclareLaunchArgument('camera_info_topic', default_value='',
                              description='Optional camera_info topic.'),
        DeclareLaunchArgument('model_profile', default_value='tiny',
                              description='tiny, vlm3r-7b or none.'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='Use /clock (bag replay).'),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='Logging level.'),
    ]
    node = Node(
        package='vlm3r_ros',
        executable='vlm3r_node',
        name='vlm3r_node',
        namespace=LaunchConfiguration('namespace'),
        output='screen',
        parameters=[
            LaunchConfiguration('params_file'),
            {
                'image_topic': LaunchConfiguration('image_topic'),
                'image_transport': LaunchConfiguration('image_transport'),
                'camera_info_topic': LaunchConfiguration('camera_info_topic'),
                'model_profile': LaunchConfiguration('model_profile'),
                'use_sim_time': LaunchConfiguration('use_sim_time'),
            },
        ],
        arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level')],
    )
    return LaunchDescription(args + [node])
