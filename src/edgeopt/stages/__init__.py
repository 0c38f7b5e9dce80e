"""Compression stages, one file per technique.

Quantization: ``calibrate`` collects activation statistics of an fp32 ONNX model and turns them
into ranges (min/max, percentile, entropy, MSE); ``qdq`` writes QuantizeLinear/DequantizeLinear
around the operators ONNX Runtime runs with int8 kernels; ``equalize`` holds the accuracy fixes
that act on the fp32 graph (cross-layer equalization, bias correction, AdaRound); ``quantize`` is
the public verb with its configs.
"""
