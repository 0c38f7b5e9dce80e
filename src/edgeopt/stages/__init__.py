"""Compression stages: a file or a sub-package per technique.

Each technique registers its config with the function that applies it
(``@register_stage(PTQConfig, choices={"ptq8": ...})`` in :mod:`edgeopt.registry`): the verbs
dispatch through the registry, recipes accept exactly the registered configs, and the search
draws from the registered choices. A stage is ``apply(ctx, config)`` with a
:class:`~edgeopt.stages._stage.StageContext`; quantization stages return a
:class:`~edgeopt.stages._stage.QuantizeOutput` that the ``quantize`` verb stamps and writes.
Adding a technique: its config, its ``apply`` and the registration in one file, imported by
``stages/builtin.py``, and a row in ``tests/stages/test_registry.py`` only if its config has
no usable default.

Sub-packages by concept. ``quantize/``: the verb and its configs (``__init__``), ``calibrate``
(activation statistics of an fp32 ONNX model turned into ranges: min/max, percentile, entropy,
MSE), ``qdq`` (QuantizeLinear/DequantizeLinear around the operators ONNX Runtime runs with int8
kernels), ``equalize`` (fixes on the fp32 graph: cross-layer equalization, bias correction,
AdaRound), ``fakequant`` and ``qat`` (quantization-aware training on the PyTorch side, exported
through the same writer), ``mixed`` (per-layer weight bits under a flash budget) and ``report``
(the fp32 and the quantized file profiled side by side for the CLI). ``prune/``: the verb and
its config (``__init__``), ``sparsity`` (magnitude masks, 2:4), ``channel`` (structured pruning
with Torch-Pruning), ``sensitivity`` (per-layer sensitivity scans) and ``report``.
``distill.py``: knowledge distillation.
"""
