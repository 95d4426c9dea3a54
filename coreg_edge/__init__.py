"""coreg-edge: label-free edge classifiers from CLIP candidate sets (Co-Reg), exported to ONNX."""

__version__ = "0.1.0"
