"""Route planning over the traversed trajectory graph (no rclpy)."""
