"""Compression stages, one file per technique.

Quantization: ``calibrate`` collects activation statistics of an fp32 ONNX model and turns them
into ranges (min/max, percentile, entropy, MSE); ``qdq`` writes QuantizeLinear/DequantizeLinear
around the operators ONNX Runtime runs with int8 kernels; ``equalize`` holds the accuracy fixes
that act on the fp32 graph (cross-layer equalization, bias correction, AdaRound); ``fakequant``
and ``qat`` are quantization-aware training on the PyTorch side (fake quantizers with ONNX
Runtime's arithmetic, exported through the same writer); ``mixed`` picks per-layer weight bits
under a flash budget; ``quantize`` is the public verb with its configs, and ``quantize_report``
profiles the fp32 and the quantized file side by side for the CLI.
"""
