"""Export: ONNX fp32 and int8 QDQ, parity checks (installed as coreg_edge.exporters)."""
