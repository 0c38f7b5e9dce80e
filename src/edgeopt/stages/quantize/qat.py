"""Quantization-aware training: fake quantization in PyTorch, exported as int8 QDQ ONNX.

The model is traced with ``torch.fx``; each Conv2d followed by a BatchNorm becomes one
:class:`~edgeopt.stages.quantize.fakequant.QuantLayer` that folds the BatchNorm into the weight
before quantizing it, and every other Conv2d / Linear becomes one too. Which activations to
quantize is not guessed: the folded fp32 model is exported and handed once to the same QDQ
writer that will write the result (:func:`edgeopt.stages.quantize.qdq.write_qdq`, a dry run),
and each tensor it puts a QuantizeLinear on is found among the PyTorch graph's outputs by value
(same shape, same numbers on a few calibration samples). A fake quantizer goes right there, one
per scale ONNX Runtime writes: a MaxPool or a Flatten that shares its input's scale shares the
quantizer too. ReLU and ReLU6 are where ONNX Runtime puts them, folded into the range before
them. The writer's own calibration (the PTQ ranges) starts the ranges, so QAT starts where PTQ
ends.

After training, the quantizers' ranges and the weights' scales go to the writer
(``TensorQuantOverrides`` fix the weight scales), with the folded weights exported afresh: the
file holds the integers the fake-quantized model computed with, and its accuracy matches the
PyTorch model's (a test holds them within 0.3 percentage points).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar

import numpy as np

from edgeopt.config import Config
from edgeopt.data import Dataset
from edgeopt.errors import InputError
from edgeopt.graph import constants
from edgeopt.models import ModelHandle
from edgeopt.registry import register_stage
from edgeopt.stages._stage import ChoiceContext
from edgeopt.stages._stage import QuantizeOutput
from edgeopt.stages._stage import StageContext
from edgeopt.stages.quantize.calibrate import CALIBRATION_METHODS
from edgeopt.training import EpochRecord
from edgeopt.training import ProgressFn

if TYPE_CHECKING:
    import onnx
    from torch import fx
    from torch import nn

__all__ = ["QATConfig", "QATOutcome", "run_qat"]

RANGE_LEARNING = ("observed", "learned")
#: Calibration samples run through both graphs to find each quantized tensor's PyTorch output.
_PROBE_SAMPLES = 8
_MATCH_TOLERANCE = 1e-3


@dataclass(frozen=True)
class QATConfig(Config):
    """Quantization-aware training: fine-tune with fake quantization, export int8 QDQ ONNX.

    BatchNorm is folded into the convolution before its weight is quantized. With
    ``freeze_bn_after_epoch`` 0 (the default) the running statistics are frozen from the start:
    the folded layer is fine-tuned, and what trains is exactly what is exported. A few epochs of
    fine-tuning a converged model do not move the statistics much, and batch statistics cost
    one more normalization per layer; set ``freeze_bn_after_epoch`` above 0 to train the first
    epochs on batch statistics (Jacob et al. 2018, section 3.2), which helps longer runs.

    Fields: ``epochs``, ``learning_rate`` (Adam, cosine decay), ``batch_size``, ``bits`` (8, or 4
    for 4-bit weights with 8-bit activations), ``is_per_channel`` (weight scales per output
    channel), ``range_learning`` (``observed``: moving-average min / max of the activations and
    max-abs weight scales; ``learned``: LSQ step sizes, Esser et al. 2020), ``calibration``
    (the calibrator that starts the activation ranges), ``freeze_bn_after_epoch``,
    ``steps_per_epoch`` (batches per epoch, each epoch a fresh shuffle; 0: the whole train
    split), ``seed``.
    """

    kind: ClassVar[str] = "quantize.qat"
    epochs: int = 2
    learning_rate: float = 1e-4
    batch_size: int = 64
    bits: int = 8
    is_per_channel: bool = True
    range_learning: str = "learned"
    calibration: str = "mse"
    freeze_bn_after_epoch: int = 0
    steps_per_epoch: int = 0
    seed: int = 0

    def label(self) -> str:
        return f"qat{self.bits}"

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or self.bits not in (4, 8):
            raise InputError(f"{self.kind}: bits must be 4 or 8, got {self.bits}.")
        if self.epochs < 1:
            raise InputError(f"{self.kind}: epochs must be at least 1, got {self.epochs}.")
        if self.batch_size < 1:
            raise InputError(f"{self.kind}: batch_size must be at least 1, got {self.batch_size}.")
        if not self.learning_rate > 0:
            raise InputError(
                f"{self.kind}: learning_rate must be above 0, got {self.learning_rate}."
            )
        if self.range_learning not in RANGE_LEARNING:
            raise InputError(
                f"{self.kind}: range_learning must be observed or learned, "
                f"got {self.range_learning!r}."
            )
        if self.calibration not in CALIBRATION_METHODS:
            known = ", ".join(CALIBRATION_METHODS)
            raise InputError(
                f"{self.kind}: calibration must be one of {known}, got {self.calibration!r}."
            )
        if self.steps_per_epoch < 0:
            raise InputError(
                f"{self.kind}: steps_per_epoch must be 0 (the whole train split) or more, "
                f"got {self.steps_per_epoch}."
            )
        if self.freeze_bn_after_epoch < 0:
            raise InputError(
                f"{self.kind}: freeze_bn_after_epoch must be 0 or more, "
                f"got {self.freeze_bn_after_epoch}."
            )

    def describe(self) -> str:
        """One line for the model's history."""
        granularity = "per-channel" if self.is_per_channel else "per-tensor"
        return (
            f"{self.kind}(epochs={self.epochs}, bits={self.bits}, {granularity}, "
            f"ranges={self.range_learning})"
        )


@dataclass(frozen=True)
class QATOutcome:
    """What QAT produced: the QDQ model, its float nodes and ranges, and the training record."""

    quantized: Any  # onnx.ModelProto
    float_nodes: list[str]
    ranges: dict[str, tuple[float, float]]
    weight_scales: dict[str, np.ndarray]
    history: tuple[EpochRecord, ...]
    accuracy: float  # test accuracy of the fake-quantized PyTorch model, after export fixes
    fp32_path: Path
    tensors: dict[str, str] = field(default_factory=dict)  # quantized tensor -> quantizer
    module: Any = None  # the fake-quantized torch.fx.GraphModule, in eval mode


@dataclass
class _Prepared:
    module: fx.GraphModule
    quantizers: dict[str, Any]  # quantizer name -> ActivationQuantizer
    tensors: dict[str, str]  # ONNX tensor -> quantizer name
    weights: dict[str, str]  # ONNX weight initializer -> QuantLayer target
    ranges: dict[str, tuple[float, float]]  # calibrated range of every float activation


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, name = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, name, module)


def _trace(module: nn.Module, spec: str) -> fx.GraphModule:
    import torch

    try:
        return torch.fx.symbolic_trace(module)
    except Exception as exc:
        detail = " ".join(str(exc).split())[:200]
        raise InputError(
            f"{spec}: QAT needs a model torch.fx can trace, and tracing failed ({detail})."
        ) from None


def _argument(node: fx.Node, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _modules_from_aten(gm: fx.GraphModule) -> None:
    """Give a ``torch.export`` program's ATen convolutions, linears and batch norms modules.

    A saved program (``.pt2``) holds ``aten.conv2d`` / ``aten.linear`` / ``aten.batch_norm``
    calls on its parameters rather than module calls; each becomes the ``nn.Conv2d``,
    ``nn.Linear`` or ``nn.BatchNorm2d`` it was, at the path of its weight (``0.0.weight`` ->
    ``0.0``), so the layers can be folded and fake-quantized like a module's.
    """
    import operator

    import torch
    from torch import nn

    aten = torch.ops.aten

    def value(arg: Any) -> Any:
        if isinstance(arg, torch.fx.Node) and arg.op == "get_attr":
            return operator.attrgetter(str(arg.target))(gm)
        return arg

    for index, node in enumerate(list(gm.graph.nodes)):
        if node.op != "call_function" or node.target not in (
            aten.conv2d.default,
            aten.linear.default,
            aten.batch_norm.default,
        ):
            continue
        weight_node = node.args[1]
        if not isinstance(weight_node, torch.fx.Node) or weight_node.op != "get_attr":
            continue
        weight, bias = value(weight_node), value(_argument(node, 2, "bias", None))
        module: nn.Module
        if node.target is aten.conv2d.default:
            stride = _argument(node, 3, "stride", [1, 1])
            padding = _argument(node, 4, "padding", [0, 0])
            dilation = _argument(node, 5, "dilation", [1, 1])
            groups = int(_argument(node, 6, "groups", 1))
            if isinstance(padding, str):
                continue
            module = nn.Conv2d(
                weight.shape[1] * groups,
                weight.shape[0],
                tuple(weight.shape[2:]),
                stride=tuple(stride),
                padding=tuple(padding),
                dilation=tuple(dilation),
                groups=groups,
                bias=bias is not None,
            )
        elif node.target is aten.linear.default:
            module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        else:
            momentum = _argument(node, 6, "momentum", 0.1)
            module = nn.BatchNorm2d(
                weight.shape[0], eps=float(_argument(node, 7, "eps", 1e-5)), momentum=momentum
            )
            with torch.no_grad():
                module.running_mean.copy_(value(node.args[3]))
                module.running_var.copy_(value(node.args[4]))
        with torch.no_grad():
            module.weight.copy_(weight)
            if bias is not None:
                module.bias.copy_(bias)
        path = str(weight_node.target)
        target = path.removesuffix(".weight") if path.endswith(".weight") else f"layer_{index}"
        _set_submodule(gm, target, module.eval())
        with gm.graph.inserting_before(node):
            call = gm.graph.call_module(target, (node.args[0],))
        node.replace_all_uses_with(call)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()


def _wrap_layers(gm: fx.GraphModule) -> list[str]:
    """Turn Conv2d(+BatchNorm2d) and Linear call sites into QuantLayers; returns their targets."""
    from torch import nn

    from edgeopt.stages.quantize.fakequant import QuantLayer

    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    targets = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or calls[node.target] != 1:
            continue  # a module called twice shares its weight; leave it alone
        layer = modules[node.target]
        if not isinstance(layer, nn.Conv2d | nn.Linear):
            continue
        users = list(node.users)
        bn = None
        if isinstance(layer, nn.Conv2d) and len(users) == 1 and users[0].op == "call_module":
            candidate = modules[users[0].target]
            if isinstance(candidate, nn.BatchNorm2d) and calls[users[0].target] == 1:
                bn = candidate
                users[0].replace_all_uses_with(node)
                gm.graph.erase_node(users[0])
        _set_submodule(gm, node.target, QuantLayer(layer, bn))
        targets.append(node.target)
    gm.graph.lint()
    gm.recompile()
    return targets


def _float_module(gm: fx.GraphModule) -> fx.GraphModule:
    """The exportable float model: folded layers, no fake quantizers."""
    from edgeopt.stages.quantize.fakequant import ActivationQuantizer
    from edgeopt.stages.quantize.fakequant import QuantLayer

    out = copy.deepcopy(gm)
    for node in list(out.graph.nodes):
        if node.op != "call_module":
            continue
        module = out.get_submodule(node.target)
        if isinstance(module, QuantLayer):
            _set_submodule(out, node.target, module.to_float())
        elif isinstance(module, ActivationQuantizer):
            node.replace_all_uses_with(node.args[0])
            out.graph.erase_node(node)
    out.graph.lint()
    out.recompile()
    out.delete_all_unused_submodules()
    return out.eval()


def _node_outputs(gm: fx.GraphModule, x: np.ndarray) -> dict[str, np.ndarray]:
    import torch

    found: dict[str, np.ndarray] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            value = super().run_node(n)
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                found[n.name] = value.detach().numpy()
            return value

    with torch.no_grad():
        Recorder(gm.eval()).run(torch.from_numpy(x))
    return found


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    return bool(np.max(np.abs(a - b), initial=0.0) <= _MATCH_TOLERANCE * max(1.0, np.abs(a).max()))


def _find_node(gm: fx.GraphModule, value: np.ndarray, outputs: dict[str, np.ndarray]) -> Any:
    """The PyTorch node computing ``value``: the first match, moved down a chain of single-user
    nodes that leave it unchanged (a Dropout, a ReLU of an all-positive tensor), so the
    quantizer sits where the exported graph's QuantizeLinear does."""
    nodes = [n for n in gm.graph.nodes if n.name in outputs]
    match = next((n for n in nodes if _same(value, outputs[n.name])), None)
    while match is not None and len(match.users) == 1:
        user = next(iter(match.users))
        if user.name not in outputs or not _same(value, outputs[user.name]):
            break
        match = user
    return match


def _upper_bound(gm: fx.GraphModule, node: fx.Node) -> float | None:
    """The clip of a ReLU6 / Hardtanh node (its output is quantized with the Clip dropped)."""
    import torch
    from torch import nn

    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        if isinstance(module, nn.Hardtanh):  # ReLU6 is a Hardtanh(0, 6)
            return float(module.max_val)
    if node.op == "call_function" and node.target in (torch.nn.functional.relu6,):
        return 6.0
    if node.op == "call_function" and node.target is torch.nn.functional.hardtanh:
        value = node.kwargs.get("max_val", node.args[2] if len(node.args) > 2 else 1.0)
        return float(value) if isinstance(value, int | float) else None
    return None


def _activation_groups(qdq: onnx.ModelProto) -> dict[str, list[str]]:
    """``{scale initializer: [tensors quantized with it]}`` in graph order (shared scales)."""
    inits = {init.name for init in qdq.graph.initializer}
    groups: dict[str, list[str]] = {}
    for node in qdq.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits:
            groups.setdefault(node.input[1], []).append(node.input[0])
    return groups


def _match_weights(
    gm: fx.GraphModule, prepared: onnx.ModelProto, names: list[str], targets: list[str]
) -> dict[str, str]:
    """``{ONNX weight: QuantLayer target}`` by name (``<target>.weight``), else by value."""

    inits = constants(prepared)
    folded = {t: _layer(gm, t).folded()[0].detach().numpy() for t in targets}
    found = {}
    for name in names:
        target = name.removesuffix(".weight")
        if target not in folded:
            array = inits.get(name)
            target = next(
                (
                    t
                    for t, w in folded.items()
                    if array is not None
                    and (_same(array, w) or (w.ndim == 2 and _same(array, w.T)))
                ),
                "",
            )
        if not target:
            raise InputError(
                f"QAT: the writer quantizes weight {name!r}, which is no Conv2d or Linear "
                "module of the model (QAT handles nn.Conv2d and nn.Linear layers)."
            )
        found[name] = target
    return found


def _export_float(handle: ModelHandle, module: fx.GraphModule, path: Path) -> onnx.ModelProto:
    """Export a float module (see :func:`_float_module`) and pre-process it for the writer."""
    import onnx

    from edgeopt.export.onnx import export_onnx
    from edgeopt.stages.quantize.qdq import prepare

    float_handle = ModelHandle(
        name=handle.name,
        spec=handle.spec,
        input_shape=handle.input_shape,
        module=module,
    )
    export_onnx(float_handle, path)
    return prepare(onnx.load(str(path)))


def _prepare(
    handle: ModelHandle, config: QATConfig, dataset: Dataset, scratch: Path
) -> tuple[_Prepared, Path]:
    """Trace, fold, dry-run the writer on the fp32 export, insert the fake quantizers."""
    from edgeopt.stages.quantize.calibrate import collect_stats
    from edgeopt.stages.quantize.calibrate import ranges_from_stats
    from edgeopt.stages.quantize.calibrate import run_batches
    from edgeopt.stages.quantize.fakequant import ActivationQuantizer
    from edgeopt.stages.quantize.qdq import write_qdq
    from edgeopt.stages.quantize.qdq import written_weight_scales

    module = copy.deepcopy(handle.require_torch("QAT")).eval()
    gm = _trace(module, handle.spec)
    _modules_from_aten(gm)
    targets = _wrap_layers(gm)
    fp32_path = scratch / f"{handle.name}.fp32.onnx"
    float_gm = _float_module(gm)
    prepared = _export_float(handle, float_gm, fp32_path)
    x_calib = dataset.arrays("calib")[0]
    stats = collect_stats(prepared, x_calib)
    ranges = ranges_from_stats(prepared, stats, method=config.calibration)
    dry_run, _ = write_qdq(
        prepared, ranges, per_channel=config.is_per_channel, weight_bits=config.bits
    )
    is_learned = config.range_learning == "learned"
    weights = _match_weights(gm, prepared, list(written_weight_scales(dry_run)), targets)
    for target in weights.values():
        _layer(gm, target).quantize_weight(
            bits=config.bits, per_channel=config.is_per_channel, is_learned=is_learned
        )
    groups = _activation_groups(dry_run)
    probe = x_calib[:_PROBE_SAMPLES]
    names = [name for tensors in groups.values() for name in tensors]
    onnx_values = next(run_batches(prepared, probe, names, batch_size=len(probe)))
    torch_values = _node_outputs(float_gm, probe)
    quantizers: dict[str, ActivationQuantizer] = {}
    tensors: dict[str, str] = {}
    sites: list[tuple[Any, str]] = []
    for index, (scale_name, members) in enumerate(groups.items()):
        owner = next((t for t in members if f"{t}_scale" == scale_name), members[0])
        quantizer_name = f"activation_quantizer_{index}"
        for tensor in members:
            node = _find_node(gm, onnx_values[tensor], torch_values)
            if node is None:
                raise InputError(
                    f"QAT: the exported graph quantizes tensor {tensor!r}, which matches no "
                    "output of the PyTorch model."
                )
            sites.append((node, quantizer_name))
            tensors[tensor] = quantizer_name
            if tensor == owner:
                lo, hi = ranges[owner]
                quantizers[quantizer_name] = ActivationQuantizer(
                    lo, hi, mode=config.range_learning, upper=_upper_bound(gm, node)
                )
    for name, quantizer in quantizers.items():
        gm.add_submodule(name, quantizer)
    for node, quantizer_name in sites:
        with gm.graph.inserting_after(node):
            call = gm.graph.call_module(quantizer_name, (node,))
        node.replace_all_uses_with(call, delete_user_cb=lambda user, call=call: user is not call)
    gm.graph.lint()
    gm.recompile()
    return _Prepared(gm, dict(quantizers), tensors, weights, ranges), fp32_path


def _layer(gm: fx.GraphModule, target: str) -> Any:
    """The QuantLayer at ``target`` (typed loosely: torch's get_submodule returns a Module)."""
    return gm.get_submodule(target)


def _layers(gm: fx.GraphModule) -> list[Any]:
    from edgeopt.stages.quantize.fakequant import QuantLayer

    return [m for m in gm.modules() if isinstance(m, QuantLayer)]


def _set_mode(gm: fx.GraphModule, *, is_bn_frozen: bool) -> None:
    from torch import nn

    gm.train()
    for layer in _layers(gm):
        layer.is_bn_frozen = is_bn_frozen
    for module in gm.modules():
        # A BatchNorm not after a convolution keeps its statistics (it is not folded).
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
            layer.bn is module for layer in _layers(gm)
        ):
            module.eval()


def _train(
    prepared: _Prepared,
    dataset: Dataset,
    config: QATConfig,
    progress: ProgressFn | None,
) -> tuple[EpochRecord, ...]:
    import torch

    from edgeopt.training import evaluate
    from edgeopt.training import seed_everything

    generator = seed_everything(config.seed)
    gm = prepared.module
    x_train, y_train = (torch.from_numpy(a) for a in dataset.arrays("train"))
    x_val, y_val = dataset.arrays("val")
    steps = math.ceil(len(x_train) / config.batch_size)
    if config.steps_per_epoch:
        steps = min(steps, config.steps_per_epoch)
    optimizer = torch.optim.Adam(gm.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps)
    loss_fn = torch.nn.CrossEntropyLoss()
    history = []
    for epoch in range(config.epochs):
        _set_mode(gm, is_bn_frozen=epoch >= config.freeze_bn_after_epoch)
        order = torch.randperm(len(x_train), generator=generator)
        total = 0.0
        for step in range(steps):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(gm(x_train[index]), y_train[index])
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(index)
            if progress is not None:
                progress(epoch, config.epochs, step, steps, float(loss.detach()))
        history.append(
            EpochRecord(
                epoch=epoch + 1,
                loss=total / min(len(x_train), steps * config.batch_size),
                val_accuracy=evaluate(gm, x_val, y_val),
                learning_rate=float(schedule.get_last_lr()[0]),
            )
        )
    gm.eval()
    return tuple(history)


def _export(
    prepared: _Prepared, handle: ModelHandle, config: QATConfig, scratch: Path
) -> tuple[Any, list[str], dict[str, tuple[float, float]], dict[str, np.ndarray]]:
    import torch

    from edgeopt.stages.quantize.qdq import write_qdq
    from edgeopt.stages.quantize.qdq import written_weight_scales

    gm = prepared.module.eval()
    for quantizer in prepared.quantizers.values():
        quantizer.freeze()
    final = _export_float(handle, _float_module(gm), scratch / f"{handle.name}.qat-float.onnx")
    ranges = dict(prepared.ranges)
    for tensor, quantizer_name in prepared.tensors.items():
        ranges[tensor] = prepared.quantizers[quantizer_name].range()
    scales = {
        name: _layer(gm, target).weight_scale().numpy().copy()
        for name, target in prepared.weights.items()
    }
    quantized, float_nodes = write_qdq(
        final,
        ranges,
        per_channel=config.is_per_channel,
        weight_bits=config.bits,
        weight_scales=scales,
    )
    # ONNX Runtime raises a weight's scale where its int32 bias would overflow; train-time
    # arithmetic then follows the file.
    for name, written in written_weight_scales(quantized).items():
        if name in prepared.weights and not np.array_equal(written, scales[name]):
            layer = gm.get_submodule(prepared.weights[name])
            layer.fixed_scale = torch.from_numpy(np.asarray(written, dtype=np.float32))
            scales[name] = written
    return quantized, float_nodes, ranges, scales


def run_qat(
    handle: ModelHandle,
    config: QATConfig,
    dataset: Dataset,
    scratch: Path,
    *,
    progress: ProgressFn | None = None,
) -> QATOutcome:
    """Fine-tune ``handle``'s PyTorch model with fake quantization and write it as QDQ ONNX.

    Args:
        handle: a PyTorch model (an ONNX-only handle is refused).
        config: the QAT settings.
        dataset: trained on its train split, validated on val, calibrated on calib; the
            returned accuracy is on test.
        scratch: a folder for the intermediate fp32 exports (the first is the fp32 baseline).
        progress: called after every batch, for progress bars.

    Returns:
        The QDQ model, float nodes, ranges, weight scales, per-epoch history and the
        fake-quantized PyTorch model's test accuracy.

    Raises:
        InputError: an ONNX-only model, a model torch.fx cannot trace, a quantized tensor or
            weight with no PyTorch counterpart.

    Example:
        >>> import tempfile, pathlib
        >>> from edgeopt.data import load_data
        >>> from edgeopt.models import load_model
        >>> data = load_data("digits")
        >>> model = load_model("zoo:cnn-s", data=data)
        >>> config = QATConfig(epochs=1, steps_per_epoch=4)
        >>> outcome = run_qat(model, config, data, pathlib.Path(tempfile.mkdtemp()))
        >>> len(outcome.history), outcome.float_nodes
        (1, [])
    """
    from edgeopt.training import evaluate

    handle.require_torch("QAT")
    prepared, fp32_path = _prepare(handle, config, dataset, scratch)
    history = _train(prepared, dataset, config, progress)
    quantized, float_nodes, ranges, scales = _export(prepared, handle, config, scratch)
    x_test, y_test = dataset.arrays("test")
    accuracy = evaluate(prepared.module, x_test, y_test)
    return QATOutcome(
        quantized=quantized,
        float_nodes=float_nodes,
        ranges=ranges,
        weight_scales=scales,
        history=history,
        accuracy=accuracy,
        fp32_path=fp32_path,
        tensors=dict(prepared.tensors),
        module=prepared.module,
    )


def _qat_choice(choice: ChoiceContext) -> QATConfig:
    """The search's ``qat8`` choice: as many epochs as the search fine-tunes for."""
    return QATConfig(epochs=max(1, choice.finetune_epochs), seed=choice.seed)


@register_stage(QATConfig, choices={"qat8": _qat_choice}, is_torch_only=True, noun="QAT")
def apply_qat(ctx: StageContext, config: QATConfig) -> QuantizeOutput:
    """Fine-tune with fake quantization (:func:`run_qat`) and hand over the QDQ model."""
    assert ctx.dataset is not None
    outcome = run_qat(ctx.handle, config, ctx.dataset, ctx.scratch, progress=ctx.progress)
    return QuantizeOutput(
        outcome.quantized,
        outcome.float_nodes,
        outcome.ranges,
        fp32_path=outcome.fp32_path,
        qat_accuracy=outcome.accuracy,
        history=outcome.history,
    )
