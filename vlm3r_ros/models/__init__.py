"""Model code: CUT3R geometry encoder, VLM-3R fused LMM, profiles (plain PyTorch, no rclpy)."""
