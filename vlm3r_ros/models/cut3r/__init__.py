"""CUT3R streaming geometry encoder (PyTorch and ONNX Runtime backends)."""
