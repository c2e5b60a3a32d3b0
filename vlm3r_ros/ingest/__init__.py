"""Camera input: ROS image encodings and camera intrinsics to NumPy (no rclpy)."""
