"""Compression stages, one file per technique.

Each technique registers its config with the function that applies it
(``@register_stage(PTQConfig, choices={"ptq8": ...})`` in :mod:`edgeopt.registry`): the verbs
dispatch through the registry, recipes accept exactly the registered configs, and the search
draws from the registered choices. A stage is ``apply(ctx, config)`` with a
:class:`~edgeopt.stages._stage.StageContext`; quantization stages return a
:class:`~edgeopt.stages._stage.QuantizeOutput` that the ``quantize`` verb stamps and writes.
Adding a technique: its config, its ``apply`` and the registration in one file, imported by
``stages/builtin.py``, and a row in ``tests/stages/test_registry.py`` only if its config has
no usable default.

Quantization: ``calibrate`` collects activation statistics of an fp32 ONNX model and turns them
into ranges (min/max, percentile, entropy, MSE); ``qdq`` writes QuantizeLinear/DequantizeLinear
around the operators ONNX Runtime runs with int8 kernels; ``equalize`` holds the accuracy fixes
that act on the fp32 graph (cross-layer equalization, bias correction, AdaRound); ``fakequant``
and ``qat`` are quantization-aware training on the PyTorch side (fake quantizers with ONNX
Runtime's arithmetic, exported through the same writer); ``mixed`` picks per-layer weight bits
under a flash budget; ``quantize`` is the public verb with its configs, and ``quantize_report``
profiles the fp32 and the quantized file side by side for the CLI.
"""
