"""The ONNX -> TFLite walk behind :mod:`edgeopt.export.tflite` (private)."""
