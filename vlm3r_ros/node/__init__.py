"""ROS 2 glue: the lifecycle node and message conversions (the only rclpy users)."""
