"""The device side: numpy + onnxruntime + pillow only (no torch, timm, open_clip or onnx)."""
