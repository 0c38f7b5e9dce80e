"""Accuracy fixes for post-training quantization that act on the fp32 ONNX graph.

- :func:`equalize`: cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization Through
  Weight Equalization and Bias Correction", ICCV, https://arxiv.org/abs/1906.04721, section 4.1).
- :func:`correct_bias`: empirical bias correction with the calibration data (same paper, 4.2).
- :func:`adaround`: learned rounding of the weights (Nagel et al. 2020, "Up or Down? Adaptive
  Rounding for Post-Training Quantization", ICML, https://arxiv.org/abs/2004.10568).

Each returns a new fp32 model; :func:`edgeopt.stages.quantize.qdq.write_qdq` then quantizes it.
"""

from __future__ import annotations

from collections.abc import Collection
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

import numpy as np

from edgeopt.graph import attribute
from edgeopt.graph import constants
from edgeopt.stages.quantize.calibrate import run_batches
from edgeopt.stages.quantize.qdq import weight_scale
from edgeopt.stages.quantize.qdq import write_qdq

if TYPE_CHECKING:
    import onnx

__all__ = ["AdaRoundResult", "adaround", "correct_bias", "equalization_pairs", "equalize"]

#: Operators between two layers that commute with a positive per-channel scale:
#: relu(x / s) = relu(x) / s and maxpool(x / s) = maxpool(x) / s for s > 0.
POSITIVE_HOMOGENEOUS = frozenset({"Relu", "MaxPool"})


@dataclass(frozen=True)
class _Layer:
    """A Conv or Gemm with a constant weight, and where its channels are in that weight."""

    node: Any  # onnx.NodeProto
    weight: str
    bias: str | None
    out_axis: int  # the weight axis of output channels
    groups: int = 1

    @property
    def name(self) -> str:
        return str(self.node.name)


def _layers(model: onnx.ModelProto) -> dict[str, _Layer]:
    """Every Conv / Gemm whose weight (and bias) is an initializer used by that node only."""
    inits = {init.name for init in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    found: dict[str, _Layer] = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2:
            continue
        weight = node.input[1]
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if weight not in inits or uses.get(weight, 0) != 1:
            continue
        if bias is not None and (bias not in inits or uses.get(bias, 0) != 1):
            continue
        if node.op_type == "Conv":
            found[node.name] = _Layer(node, weight, bias, 0, int(attribute(node, "group", 1)))
        elif attribute(node, "transA", 0) == 0:
            found[node.name] = _Layer(node, weight, bias, 0 if attribute(node, "transB", 0) else 1)
    return found


def _arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {name: value.copy() for name, value in constants(model).items()}


def _store(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> None:
    import onnx

    for index, init in enumerate(model.graph.initializer):
        if init.name in values:
            array = np.asarray(values[init.name]).astype(
                onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
            )
            model.graph.initializer[index].CopyFrom(onnx.numpy_helper.from_array(array, init.name))


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def equalization_pairs(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """Consecutive layers ``(first, second)`` joined only by ReLU / MaxPool (or directly).

    The first layer's output must feed nothing else and not be a graph output, so a rescaled
    channel reaches the second layer alone.
    """
    layers = _layers(model)
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    pairs = []
    for name, layer in layers.items():
        tensor = layer.node.output[0]
        while True:
            users = consumers.get(tensor, [])
            if len(users) != 1 or tensor in outputs:
                break
            user = users[0]
            if user.op_type in POSITIVE_HOMOGENEOUS and user.input[0] == tensor:
                tensor = user.output[0]
                continue
            if user.name in layers and user.input[0] == tensor:
                pairs.append((name, user.name))
            break
    return pairs


def _out_view(array: np.ndarray, layer: _Layer) -> np.ndarray:
    """The weight as (output channels, everything else)."""
    return np.moveaxis(array, layer.out_axis, 0).reshape(array.shape[layer.out_axis], -1)


def _in_index(array: np.ndarray, layer: _Layer) -> list[tuple[Any, ...]]:
    """For each input channel, the index of the weight entries that read it."""
    if layer.node.op_type == "Gemm":
        in_axis = 1 - layer.out_axis
        channels = array.shape[in_axis]
        return [(slice(None), c) if in_axis == 1 else (c, slice(None)) for c in range(channels)]
    out_channels, per_group = array.shape[0], array.shape[1]
    out_per_group = out_channels // layer.groups
    index = []
    for c in range(per_group * layer.groups):
        group, inner = divmod(c, per_group)
        index.append((slice(group * out_per_group, (group + 1) * out_per_group), inner))
    return index


def equalize(
    model: onnx.ModelProto, *, iterations: int = 100, tolerance: float = 1e-4
) -> onnx.ModelProto:
    """Cross-layer equalization: rescale channels so paired layers share per-channel ranges.

    For each pair (Nagel et al. 2019, https://arxiv.org/abs/1906.04721, section 4.1), output
    channel i of the first layer (weights and bias) is divided by
    ``s_i = sqrt(r1_i * r2_i) / r2_i`` and input channel i of the second layer multiplied by it,
    where ``r`` is the channel's largest absolute weight. Afterwards both ranges equal
    ``sqrt(r1_i * r2_i)``. The network computes the same function because ReLU and max pooling
    commute with positive scales. A depthwise layer (groups == channels) has one filter per
    channel, so as the second layer its input channel i is its filter i (and the first layer's
    output channel i likewise). Chains (conv, depthwise, pointwise) are repeated until no scale
    moves by more than ``tolerance``. Pairs joined by anything else are left alone.

    Args:
        model: the fp32 model (not modified).
        iterations: most passes over all pairs.
        tolerance: stop when every ``|s_i - 1|`` is below this.

    Returns:
        A new fp32 model computing the same function.

    Example:
        >>> import onnx
        >>> from onnx import helper, numpy_helper, TensorProto
        >>> w1 = numpy_helper.from_array(np.array([[4.0, 0], [0, 0.25]], np.float32), "w1")
        >>> w2 = numpy_helper.from_array(np.array([[1.0, 1.0]], np.float32), "w2")
        >>> graph = helper.make_graph(
        ...     [helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc1", transB=1),
        ...      helper.make_node("Relu", ["h"], ["r"], name="relu"),
        ...      helper.make_node("Gemm", ["r", "w2"], ["y"], name="fc2", transB=1)], "g",
        ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
        ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1])], [w1, w2])
        >>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        >>> out = equalize(model)
        >>> numpy_helper.to_array(out.graph.initializer[0]).round(3).tolist()
        [[2.0, 0.0], [0.0, 0.5]]
    """
    out = _copy(model)
    layers = _layers(out)
    pairs = equalization_pairs(out)
    if not pairs:
        return out
    values = _arrays(out)
    for _ in range(iterations):
        largest = 0.0
        for first_name, second_name in pairs:
            first, second = layers[first_name], layers[second_name]
            w1, w2 = values[first.weight], values[second.weight]
            r1 = np.abs(_out_view(w1, first)).max(axis=1).astype(np.float64)
            index = _in_index(w2, second)
            if len(index) != len(r1):
                continue  # channel counts differ (a reshape in between): not a pair after all
            r2 = np.array([np.abs(w2[i]).max() for i in index], dtype=np.float64)
            valid = (r1 > 0) & (r2 > 0)
            scale = np.ones_like(r1)
            scale[valid] = np.sqrt(r1[valid] * r2[valid]) / r2[valid]
            shape = [1] * w1.ndim
            shape[first.out_axis] = -1
            values[first.weight] = (w1 / scale.reshape(shape)).astype(w1.dtype)
            if first.bias is not None:
                values[first.bias] = (values[first.bias] / scale).astype(w1.dtype)
            w2 = w2.astype(np.float64)
            for channel, where in enumerate(index):
                w2[where] *= scale[channel]
            values[second.weight] = w2.astype(values[second.weight].dtype)
            largest = max(largest, float(np.abs(scale - 1.0).max()))
        if largest < tolerance:
            break
    _store(out, values)
    return out


def _layer_outputs(
    model: onnx.ModelProto, x: np.ndarray, names: list[str]
) -> dict[str, list[np.ndarray]]:
    collected: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for batch in run_batches(model, x, names):
        for name in names:
            collected[name].append(batch[name])
    return collected


def _channel_mean(chunks: list[np.ndarray]) -> np.ndarray:
    """Mean over every axis but 1 (channels), accumulated batch by batch in float64."""
    total = None
    count = 0
    for chunk in chunks:
        axes = tuple(a for a in range(chunk.ndim) if a != 1)
        part = chunk.astype(np.float64).sum(axis=axes)
        total = part if total is None else total + part
        count += chunk.size // chunk.shape[1]
    assert total is not None
    return total / max(count, 1)


def correct_bias(
    fp32: onnx.ModelProto,
    ranges: Mapping[str, tuple[float, float]],
    x: np.ndarray,
    *,
    per_channel: bool = True,
    weight_bits: int = 8,
    exclude_nodes: Collection[str] = (),
    weight_scales: Mapping[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """Empirical bias correction: remove the mean output error quantization adds per channel.

    Nagel et al. 2019 (https://arxiv.org/abs/1906.04721), section 4.2, the empirical variant:
    for each Conv / Gemm in graph order, ``E[y_fp32 - y_quant]`` per output channel over the
    calibration samples ``x`` is added to its bias (the quantized mean error subtracted). The
    reference ``y_fp32`` comes from the original model; ``y_quant`` is the layer's output in the
    model quantized with the corrections made so far, so each layer also absorbs the shift the
    earlier layers' remaining errors cause (layer by layer, one re-quantization per layer).

    Args:
        fp32: the fp32 model to quantize (not modified).
        ranges: activation ranges, as for :func:`write_qdq`.
        x: calibration inputs.
        per_channel: weight quantization as the final model will use it.
        weight_bits: 8 or 4.
        exclude_nodes: nodes kept in float (not corrected).
        weight_scales: explicit weight scales, as for :func:`write_qdq`.

    Returns:
        A new fp32 model with corrected biases (a layer without a bias gains one).

    Example:
        >>> from onnx import helper, numpy_helper, TensorProto
        >>> from edgeopt.stages.quantize.calibrate import calibrate
        >>> w = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
        >>> graph = helper.make_graph(
        ...     [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)], "g",
        ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        ...     [numpy_helper.from_array(w, "w")])
        >>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        >>> x = np.random.default_rng(1).standard_normal((64, 4)).astype(np.float32)
        >>> fixed = correct_bias(model, calibrate(model, x), x, weight_bits=4)
        >>> [init.name for init in fixed.graph.initializer]
        ['w', 'w_bias_corrected']
    """
    import onnx

    out = _copy(fp32)
    layers = [layer for layer in _layers(out).values() if layer.name not in set(exclude_nodes)]
    if not layers:
        return out
    reference = _layer_outputs(fp32, x, [layer.node.output[0] for layer in layers])
    for layer in layers:
        quantized, _ = write_qdq(
            out,
            ranges,
            per_channel=per_channel,
            weight_bits=weight_bits,
            exclude_nodes=exclude_nodes,
            weight_scales=weight_scales,
        )
        node = next((n for n in quantized.graph.node if n.name == layer.name), None)
        if node is None:
            continue
        y_quant = _layer_outputs(quantized, x, [node.output[0]])[node.output[0]]
        error = _channel_mean(reference[layer.node.output[0]]) - _channel_mean(y_quant)
        beta = float(attribute(layer.node, "beta", 1.0)) if layer.node.op_type == "Gemm" else 1.0
        values = _arrays(out)
        target = next(n for n in out.graph.node if n.name == layer.name)
        if layer.bias is None:
            name = f"{layer.weight}_bias_corrected"
            out.graph.initializer.append(
                onnx.numpy_helper.from_array((error / beta).astype(np.float32), name)
            )
            while len(target.input) < 3:
                target.input.append("")
            target.input[2] = name
        else:
            bias = values[layer.bias]
            _store(out, {layer.bias: bias + (error / beta).reshape(bias.shape)})
    return out


@dataclass(frozen=True)
class AdaRoundResult:
    """The model with rounded weights written in, and per layer the integers and scales."""

    model: Any  # onnx.ModelProto
    integers: dict[str, np.ndarray]  # weight name -> integer weights the QDQ file must hold
    scales: dict[str, np.ndarray]  # weight name -> the scale (per output channel or scalar)
    seconds: float


def _torch_layer(layer: _Layer) -> Any:
    """``f(x, w, b)`` computing the node in PyTorch (None when its attributes are unsupported)."""
    import torch.nn.functional as functional

    node = layer.node
    if node.op_type == "Gemm":
        alpha = float(attribute(node, "alpha", 1.0))
        beta = float(attribute(node, "beta", 1.0))
        trans_b = int(attribute(node, "transB", 0))

        def gemm(x: Any, w: Any, b: Any) -> Any:
            y = alpha * (x @ (w.t() if trans_b else w))
            return y + beta * b if b is not None else y

        return gemm
    if attribute(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    pads = list(attribute(node, "pads", []))
    strides = list(attribute(node, "strides", []))
    dilations = list(attribute(node, "dilations", []))

    def conv(x: Any, w: Any, b: Any) -> Any:
        dims = w.dim() - 2
        pad = pads or [0] * (2 * dims)
        begin, end = pad[: len(pad) // 2], pad[len(pad) // 2 :]
        if begin == end:
            padding = begin
        else:  # torch pads symmetrically; pad the input first (last dim first)
            flat = [p for pair in zip(reversed(begin), reversed(end), strict=True) for p in pair]
            x = functional.pad(x, flat)
            padding = [0] * dims
        op = {1: functional.conv1d, 2: functional.conv2d, 3: functional.conv3d}[dims]
        return op(
            x,
            w,
            b,
            stride=strides or 1,
            padding=padding,
            dilation=dilations or 1,
            groups=layer.groups,
        )

    return conv


def _followed_by_relu(model: onnx.ModelProto, layer: _Layer) -> bool:
    users = [n for n in model.graph.node if layer.node.output[0] in n.input]
    return len(users) == 1 and users[0].op_type == "Relu"


def adaround(
    fp32: onnx.ModelProto,
    x: np.ndarray,
    *,
    bits: int = 8,
    per_channel: bool = True,
    scales: Mapping[str, np.ndarray] | None = None,
    iterations: int = 1000,
    batch_size: int = 64,
    regularization: float = 0.01,
    learning_rate: float = 1e-2,
    exclude_nodes: Collection[str] = (),
    seed: int = 0,
) -> AdaRoundResult:
    """Learn whether each weight rounds up or down, layer by layer, and write the result in.

    AdaRound (Nagel et al. 2020, https://arxiv.org/abs/2004.10568): the quantized weight is
    ``s * clip(floor(w / s) + h(V), qmin, qmax)`` with the rectified sigmoid
    ``h(V) = clip(sigmoid(V) * 1.2 - 0.1, 0, 1)``; V (initialised so ``h`` equals the fractional
    part) is trained with Adam to minimise the layer's output error on its calibration inputs
    (``||f(Wx) - f(W~x)||^2``, f the following ReLU when there is one, as the paper recommends)
    plus ``regularization * sum(1 - |2h - 1|^beta)``, with beta annealed from 20 to 2 after a
    20% warm-up without the regulariser. Each layer's inputs are taken from the fp32 model
    (collected once with ONNX Runtime). The scale stays fixed: the one the QDQ writer uses
    (pass ``scales`` from :func:`edgeopt.stages.quantize.qdq.written_weight_scales`; the
    max-abs :func:`edgeopt.stages.quantize.qdq.weight_scale` otherwise). The weights written
    back are exactly ``s * integer``; give the returned scales to
    ``write_qdq(weight_scales=...)`` and the file holds exactly these integers.

    Args:
        fp32: the fp32 model (not modified).
        x: calibration inputs.
        bits: weight bits (8 or 4).
        per_channel: one scale per output channel (else one per tensor).
        scales: the writer's scale per weight name (per channel, or a scalar).
        iterations: Adam steps per layer.
        batch_size: calibration samples per step.
        regularization: lambda of the rounding regulariser.
        learning_rate: Adam's learning rate.
        exclude_nodes: layers left as they are.
        seed: seeds the sample order.

    Returns:
        The new fp32 model, and per weight the integers and scales.

    Example:
        >>> from onnx import helper, numpy_helper, TensorProto
        >>> w = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
        >>> graph = helper.make_graph(
        ...     [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)], "g",
        ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        ...     [numpy_helper.from_array(w, "w")])
        >>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        >>> x = np.random.default_rng(1).standard_normal((64, 4)).astype(np.float32)
        >>> result = adaround(model, x, bits=4, iterations=50)
        >>> result.integers["w"].shape, int(np.abs(result.integers["w"]).max()) <= 8
        ((3, 4), True)
    """
    import time

    import torch

    start = time.perf_counter()
    out = _copy(fp32)
    layers = [layer for layer in _layers(out).values() if layer.name not in set(exclude_nodes)]
    functions = {layer.name: _torch_layer(layer) for layer in layers}
    layers = [layer for layer in layers if functions[layer.name] is not None]
    if not layers:
        return AdaRoundResult(out, {}, {}, 0.0)
    inputs = {
        name: np.concatenate(chunks)
        for name, chunks in _layer_outputs(
            fp32, x, sorted({layer.node.input[0] for layer in layers})
        ).items()
    }
    values = _arrays(out)
    settings = _RoundingSettings(
        qmin=-127 if bits == 8 else -8,
        qmax=127 if bits == 8 else 7,
        iterations=iterations,
        batch_size=batch_size,
        regularization=regularization,
        learning_rate=learning_rate,
    )
    generator = torch.Generator().manual_seed(seed)
    integers: dict[str, np.ndarray] = {}
    used_scales: dict[str, np.ndarray] = {}
    threads = torch.get_num_threads()
    # The layers are tiny: one thread is as fast, and far faster when the cores are shared
    # (OpenMP threads spin-waiting on an oversubscribed machine were 10x slower).
    torch.set_num_threads(1)
    try:
        for layer in layers:
            weight = values[layer.weight].astype(np.float32)
            if scales is not None and layer.weight in scales:
                scale = np.asarray(scales[layer.weight], dtype=np.float32)
            else:
                axis = layer.out_axis if per_channel else None
                scale = weight_scale(weight, bits=bits, axis=axis)
            shape = [1] * weight.ndim
            if scale.size > 1:
                shape[layer.out_axis] = -1
            scale = scale.reshape(shape)
            bias = values[layer.bias].astype(np.float32) if layer.bias else None
            rounded = _learn_rounding(
                functions[layer.name],
                inputs[layer.node.input[0]].astype(np.float32),
                weight,
                bias,
                scale,
                is_relu=_followed_by_relu(out, layer),
                settings=settings,
                generator=generator,
            )
            integers[layer.weight] = rounded
            used_scales[layer.weight] = scale.reshape(-1) if scale.size > 1 else scale.reshape(())
            values[layer.weight] = (rounded * scale).astype(np.float32)
    finally:
        torch.set_num_threads(threads)
    _store(out, {name: values[name] for name in integers})
    return AdaRoundResult(out, integers, used_scales, time.perf_counter() - start)


@dataclass(frozen=True)
class _RoundingSettings:
    qmin: int
    qmax: int
    iterations: int
    batch_size: int
    regularization: float
    learning_rate: float
    zeta: float = 1.1  # the rectified sigmoid's stretch (Louizos et al. 2018, as in AdaRound)
    gamma: float = -0.1
    beta_start: float = 20.0
    beta_end: float = 2.0
    warmup: float = 0.2


def _learn_rounding(
    fn: Any,
    data: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    scale: np.ndarray,
    *,
    is_relu: bool,
    settings: _RoundingSettings,
    generator: Any,
) -> np.ndarray:
    """AdaRound on one layer: the integer weights, ``floor(w / s)`` plus the learned 0 or 1."""
    import torch

    zeta, gamma = settings.zeta, settings.gamma
    s = torch.from_numpy(scale)
    w = torch.from_numpy(weight)
    b = torch.from_numpy(bias) if bias is not None else None
    inputs = torch.from_numpy(data)
    floor = torch.floor(w / s)
    rest = (w / s - floor).clamp(1e-4, 1 - 1e-4)
    v = torch.nn.Parameter(-torch.log((zeta - gamma) / (rest - gamma) - 1))
    optimizer = torch.optim.Adam([v], lr=settings.learning_rate)
    warmup = int(settings.warmup * settings.iterations)
    with torch.no_grad():
        target = fn(inputs, w, b)
        target = torch.relu(target) if is_relu else target
    for step in range(settings.iterations):
        batch = min(settings.batch_size, len(inputs))
        index = torch.randint(0, len(inputs), (batch,), generator=generator)
        h = torch.clamp(torch.sigmoid(v) * (zeta - gamma) + gamma, 0, 1)
        w_soft = s * torch.clamp(floor + h, settings.qmin, settings.qmax)
        y = fn(inputs[index], w_soft, b)
        y = torch.relu(y) if is_relu else y
        loss = (y - target[index]).pow(2).sum(1).mean()
        if step >= warmup:
            progress = (step - warmup) / max(1, settings.iterations - warmup)
            beta = settings.beta_end + (settings.beta_start - settings.beta_end) * (1 - progress)
            loss = loss + settings.regularization * (1 - (2 * h - 1).abs().pow(beta)).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        rounded = torch.clamp(floor + (v >= 0).float(), settings.qmin, settings.qmax)
    return rounded.numpy().astype(np.int64)
