"""Pure pipeline logic: frame buffer, keyframe coverage, answer parsing, workers (no rclpy)."""
