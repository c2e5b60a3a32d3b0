"""Shared test setup: DDS kept on this machine, a ROS domain of this run's own."""
import os

# Before rclpy initialises: keep discovery on localhost and away from other runs.
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('ROS_DOMAIN_ID', str(os.getpid() % 100 + 1))
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
