"""Quantization-aware training: fake quantization in PyTorch, exported as int8 QDQ ONNX.

The model is captured with ``torch.export`` and QAT rewrites the exported program's ATen graph,
as PyTorch's PT2E flow does ("PyTorch 2 Export Quantization-Aware Training",
pytorch.org/tutorials/prototype/pt2e_quant_qat.html; torch 2.13 no longer ships
``prepare_qat_pt2e``, which moved to torchao, so the insertion is written here). The graph is
not limited to a list of module types: every ``conv1d`` / ``conv2d`` / ``conv_transpose`` /
``linear`` call on a parameter becomes one
:class:`~edgeopt.stages.quantize.fakequant.QuantLayer` (a convolution followed by a BatchNorm
folds it into the weight before quantizing, Jacob et al. 2018, section 3.2), attention's fused
``scaled_dot_product_attention`` is written out as its ``Q K^T`` and ``A V`` matmuls, and a
linear on tokens runs on 2-D rows (one Gemm in the file). Which activations to quantize is
not guessed: the folded fp32 model is exported and handed to the same QDQ writer that will
write the result (:func:`edgeopt.stages.quantize.qdq.write_qdq`, a dry run), and each tensor
it puts a QuantizeLinear on is found among the PyTorch graph's outputs by value (same shape,
same numbers on a few calibration samples). A fake quantizer goes right there, one per scale
ONNX Runtime writes: a MaxPool or a Flatten that shares its input's scale shares the quantizer
too. ReLU and ReLU6 are where ONNX Runtime puts them, folded into the range before them. A
tensor the writer would quantize that PyTorch never computes (inside an ONNX GRU, an inlined
HardSwish) keeps the nodes around it in float, named in the result with the PyTorch module
they come from. The writer's own calibration (the PTQ ranges) starts the ranges, so QAT starts
where PTQ ends.

After training, the quantizers' ranges and the weights' scales go to the writer
(``TensorQuantOverrides`` fix the weight scales), with the folded weights exported afresh: the
file holds the integers the fake-quantized model computed with, and its accuracy matches the
PyTorch model's (a test holds them within 0.3 percentage points).
"""

from __future__ import annotations

import copy
import math
import warnings
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
    excluded: list[str] = field(default_factory=list)  # ONNX nodes kept in float


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, name = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, name, module)


def _capture(module: nn.Module, handle: ModelHandle) -> fx.GraphModule:
    """The model as ``torch.export`` captures it: ATen operators, no module boundaries.

    As in PyTorch's PT2E quantization ("(prototype) PyTorch 2 Export Quantization-Aware
    Training", pytorch.org/tutorials/prototype/pt2e_quant_qat.html), the graph QAT rewrites is
    the exported program, so a layer called inside another module (the projections and matmuls
    of ``nn.MultiheadAttention``, a functional call) is in the graph like any other. The
    program's graph becomes a plain, trainable GraphModule (a program's own module refuses
    ``train()``), and each node's shape at batch 2 is recorded (``tensor_meta``) for the
    rewrites that follow.
    """
    import logging

    import torch
    from torch.fx.passes.shape_prop import ShapeProp

    shape = handle.require_input_shape()
    example = torch.randn((2, *shape), generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=65536)
    logger = logging.getLogger("torch.export")
    was_disabled, logger.disabled = logger.disabled, True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(
                _in_eval_mode(module), (example,), dynamic_shapes=({0: batch},)
            )
            captured = program.module()
            gm = torch.fx.GraphModule(captured, copy.deepcopy(captured.graph))
    except Exception as exc:
        detail = " ".join(str(exc).split())[:200]
        raise InputError(
            f"{handle.spec}: QAT needs a model torch.export can capture with a free batch "
            f"dimension, and capturing it failed ({detail})."
        ) from None
    finally:
        logger.disabled = was_disabled
    for spec in ("_in_spec", "_out_spec"):  # the program's input / output flattening
        if hasattr(captured, spec):
            setattr(gm, spec, getattr(captured, spec))
    with torch.no_grad():
        ShapeProp(gm).propagate(example)
    return gm


def _in_eval_mode(module: nn.Module) -> nn.Module:
    """``module.eval()``; a loaded program's module, which refuses ``eval()``, as it is."""
    try:
        return module.eval()
    except NotImplementedError:
        return module


def _argument(node: fx.Node, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _shape(node: Any) -> tuple[int, ...] | None:
    """The shape :func:`_capture` recorded for a node's output (at batch 2), if any."""
    meta = getattr(node, "meta", {}).get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return tuple(int(d) for d in shape) if shape is not None else None


def _decompose_attention(gm: fx.GraphModule) -> None:
    """Write ``scaled_dot_product_attention`` as its two matmuls around a softmax.

    The fused operator hides the activation-by-activation matmuls ``Q K^T`` and ``A V``
    (Vaswani et al. 2017, eq. 1) that the int8 file runs as QLinearMatMul; written out, each
    input they quantize is a node of the graph and gets its fake quantizer. An attention with
    dropout, a causal flag or grouped heads is left fused, and the writer's matmuls in it are
    then kept in float (named).
    """
    import torch

    aten = torch.ops.aten
    graph = gm.graph
    for node in list(graph.nodes):
        if (
            node.op != "call_function"
            or node.target is not aten.scaled_dot_product_attention.default
        ):
            continue
        query, key, value = node.args[:3]
        mask = _argument(node, 3, "attn_mask", None)
        scale = _argument(node, 6, "scale", None)
        shape = _shape(query)
        if (
            _argument(node, 4, "dropout_p", 0.0)
            or _argument(node, 5, "is_causal", False)
            or _argument(node, 7, "enable_gqa", False)
            or shape is None
        ):
            continue
        factor = float(scale) if scale is not None else 1.0 / math.sqrt(shape[-1])
        with graph.inserting_before(node):
            key_t = graph.call_function(aten.transpose.int, (key, -2, -1))
            scores = graph.call_function(aten.matmul.default, (query, key_t))
            scores = graph.call_function(aten.mul.Tensor, (scores, factor))
            if mask is not None:
                scores = _add_mask(graph, scores, mask)
                if scores is None:
                    continue
            weights = graph.call_function(aten.softmax.int, (scores, -1))
            out = graph.call_function(aten.matmul.default, (weights, value))
        node.replace_all_uses_with(out)
        graph.erase_node(node)
    graph.lint()
    gm.recompile()


def _add_mask(graph: fx.Graph, scores: fx.Node, mask: Any) -> fx.Node | None:
    """An attention mask applied as ``scaled_dot_product_attention`` applies it (a boolean one
    keeps the scores where True; a float one is added); None for a mask of unknown type."""
    import torch

    aten = torch.ops.aten
    dtype = getattr(getattr(mask, "meta", {}).get("tensor_meta"), "dtype", None)
    if dtype == torch.bool:
        dropped = graph.call_function(aten.logical_not.default, (mask,))
        return graph.call_function(aten.masked_fill.Scalar, (scores, dropped, float("-inf")))
    if dtype is not None and dtype.is_floating_point:
        return graph.call_function(aten.add.Tensor, (scores, mask))
    return None


def _flatten_linears(gm: fx.GraphModule) -> None:
    """Give every ``linear`` on a 3-D (or higher) input a 2-D one: ``reshape -> linear ->
    reshape``.

    The ONNX exporter writes a linear on tokens as MatMul then Add (the bias): the int8 file
    would quantize the MatMul's output before the bias, a tensor PyTorch never computes. On 2-D
    rows it is one Gemm with an int32 bias, as for the classifier heads, and every tensor the
    writer quantizes is a node of the graph.
    """
    import torch

    aten = torch.ops.aten
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not aten.linear.default:
            continue
        source, weight = node.args[0], node.args[1]
        shape = _shape(source)
        if shape is None or len(shape) < 3 or not isinstance(source, torch.fx.Node):
            continue
        out_features = _shape(weight)
        if out_features is None:
            continue
        with graph.inserting_before(node):
            sizes = [
                graph.call_function(aten.sym_size.int, (source, i)) for i in range(len(shape) - 1)
            ]
            flat = graph.call_function(aten.reshape.default, (source, [-1, shape[-1]]))
        node.args = (flat, *node.args[1:])
        with graph.inserting_after(node):
            back = graph.call_function(aten.reshape.default, (node, [*sizes, out_features[0]]))
        node.replace_all_uses_with(back, delete_user_cb=lambda user, back=back: user is not back)
    graph.lint()
    gm.recompile()


def _batch_norm_class() -> type[nn.Module]:
    """A BatchNorm for any rank (an exported ``batch_norm`` does not say 1-D or 2-D)."""
    from torch import nn

    class BatchNorm(nn.modules.batchnorm._BatchNorm):
        def _check_input_dim(self, input: Any) -> None:
            return None

    return BatchNorm


_CONV_ARGS = {"stride": 3, "padding": 4, "dilation": 5, "groups": 6}
_TRANSPOSED_ARGS = {"stride": 3, "padding": 4, "output_padding": 5, "groups": 6, "dilation": 7}


def _layer_from_aten(node: fx.Node, weight: Any, bias: Any, batch_norm: Any) -> nn.Module | None:
    """The module an ATen ``conv*`` / ``conv_transpose*`` / ``linear`` / ``batch_norm`` call is."""
    import torch
    from torch import nn

    aten = torch.ops.aten
    target = node.target
    dims = weight.ndim - 2
    has_bias = bias is not None
    if target is aten.linear.default:
        return nn.Linear(weight.shape[1], weight.shape[0], bias=has_bias)
    if target in (
        aten.conv1d.default,
        aten.conv2d.default,
        aten.conv1d.padding,
        aten.conv2d.padding,
    ):
        args = {k: _argument(node, i, k, None) for k, i in _CONV_ARGS.items()}
        groups = int(args["groups"] or 1)
        padding = args["padding"] if args["padding"] is not None else [0] * dims
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        return conv(
            weight.shape[1] * groups,
            weight.shape[0],
            tuple(weight.shape[2:]),
            stride=tuple(args["stride"] or [1] * dims),
            padding=padding if isinstance(padding, str) else tuple(padding),
            dilation=tuple(args["dilation"] or [1] * dims),
            groups=groups,
            bias=has_bias,
        )
    if target in (aten.conv_transpose1d.default, aten.conv_transpose2d.input):
        args = {k: _argument(node, i, k, None) for k, i in _TRANSPOSED_ARGS.items()}
        groups = int(args["groups"] or 1)
        transposed = nn.ConvTranspose1d if dims == 1 else nn.ConvTranspose2d
        return transposed(
            weight.shape[0],
            weight.shape[1] * groups,
            tuple(weight.shape[2:]),
            stride=tuple(args["stride"] or [1] * dims),
            padding=tuple(args["padding"] or [0] * dims),
            output_padding=tuple(args["output_padding"] or [0] * dims),
            groups=groups,
            bias=has_bias,
            dilation=tuple(args["dilation"] or [1] * dims),
        )
    if target is aten.batch_norm.default and not _argument(node, 5, "training", False):
        module = batch_norm(
            weight.shape[0],
            eps=float(_argument(node, 7, "eps", 1e-5)),
            momentum=_argument(node, 6, "momentum", 0.1),
        )
        return module  # type: ignore[no-any-return]
    return None


def _module_target(gm: fx.GraphModule, path: str, index: int) -> str:
    """Where a layer made from the weight at ``path`` lives: ``0.0.weight`` -> ``0.0``,
    ``attention.in_proj_weight`` -> ``attention.in_proj``, else ``layer_<index>``."""
    if path.endswith(".weight"):
        return path.removesuffix(".weight")
    if path.endswith("_weight"):
        target = path.removesuffix("_weight")
        parent, _, name = target.rpartition(".")
        owner = gm.get_submodule(parent) if parent else gm
        if not hasattr(owner, name):
            return target
    return f"layer_{index}"


def _modules_from_aten(gm: fx.GraphModule) -> None:
    """Give the captured program's ATen convolutions, linears and batch norms modules.

    The exported graph holds ``aten.conv1d`` / ``conv2d`` / ``conv_transpose*`` / ``linear`` /
    ``batch_norm`` calls on its parameters rather than module calls; each becomes the module it
    was (``nn.Conv1d``, ``nn.ConvTranspose2d``, ...) at the path of its weight (``0.0.weight``
    -> ``0.0``), so the layers can be folded and fake-quantized like a module's. A weight used
    by two calls (a layer applied twice) becomes one module called twice.
    """
    import operator

    import torch

    batch_norm = _batch_norm_class()

    def value(arg: Any) -> Any:
        if isinstance(arg, torch.fx.Node) and arg.op == "get_attr":
            return operator.attrgetter(str(arg.target))(gm)
        return arg

    made: dict[str, tuple[str, str]] = {}  # weight path -> (module target, call signature)
    for index, node in enumerate(list(gm.graph.nodes)):
        if node.op != "call_function" or len(node.args) < 2:
            continue
        weight_node = node.args[1]
        if not isinstance(weight_node, torch.fx.Node) or weight_node.op != "get_attr":
            continue
        weight, bias = value(weight_node), value(_argument(node, 2, "bias", None))
        if not isinstance(weight, torch.Tensor) or weight.ndim < 1:
            continue
        if bias is not None and not isinstance(bias, torch.Tensor):
            continue  # a bias computed by the graph, not a parameter
        module = _layer_from_aten(node, weight, bias, batch_norm)
        if module is None or (weight.ndim < 2 and not isinstance(module, batch_norm)):
            continue
        path = str(weight_node.target)
        bias_node = _argument(node, 2, "bias", None)
        signature = f"{module!r} {getattr(bias_node, 'target', None)}"
        if path in made:
            target, made_as = made[path]
            if made_as != signature:
                continue  # the same weight called differently: left as it is (float)
        else:
            with torch.no_grad():
                module.weight.copy_(weight)
                if bias is not None:
                    module.bias.copy_(bias)
                if isinstance(module, batch_norm):
                    module.running_mean.copy_(value(node.args[3]))
                    module.running_var.copy_(value(node.args[4]))
            target = _module_target(gm, path, index)
            _set_submodule(gm, target, module.eval())
            made[path] = (target, signature)
        with gm.graph.inserting_before(node):
            call = gm.graph.call_module(target, (node.args[0],))
        call.meta = dict(node.meta)
        node.replace_all_uses_with(call)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()


def _wrap_layers(gm: fx.GraphModule) -> list[str]:
    """Turn the convolutions (with the BatchNorm after one, if called once) and linears into
    QuantLayers; returns their targets."""
    from torch import nn

    from edgeopt.stages.quantize.fakequant import QuantLayer

    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    targets: list[str] = []
    foldable = (nn.Conv1d, nn.Conv2d)
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or node.target in targets:
            continue
        layer = modules[node.target]
        if not isinstance(
            layer, nn.Conv1d | nn.Conv2d | nn.ConvTranspose1d | nn.ConvTranspose2d | nn.Linear
        ):
            continue
        users = list(node.users)
        bn = None
        if (
            isinstance(layer, foldable)
            and calls[node.target] == 1  # a layer called twice shares its weight: no folding
            and len(users) == 1
            and users[0].op == "call_module"
        ):
            candidate = modules[users[0].target]
            if (
                isinstance(candidate, nn.modules.batchnorm._BatchNorm)
                and calls[users[0].target] == 1
            ):
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

    with warnings.catch_warnings():  # torch's pytree warns about its own LeafSpec on copy
        warnings.simplefilter("ignore", FutureWarning)
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


def _find_node(
    gm: fx.GraphModule, value: np.ndarray, outputs: dict[str, np.ndarray], taken: set[str]
) -> Any:
    """The PyTorch node computing ``value``: the first match no other quantized tensor took
    (a layer applied twice to one input computes the same values twice), moved down a chain of
    single-user nodes that leave it unchanged (a Dropout, a ReLU of an all-positive tensor), so
    the quantizer sits where the exported graph's QuantizeLinear does."""
    matches = [n for n in gm.graph.nodes if n.name in outputs and _same(value, outputs[n.name])]
    match = next((n for n in matches if n.name not in taken), matches[0] if matches else None)
    while match is not None and len(match.users) == 1:
        user = next(iter(match.users))
        if user.name not in outputs or not _same(value, outputs[user.name]):
            break
        match = user
    return match


def _upper_bound(node: fx.Node) -> float | None:
    """The clip of a ReLU6 / Hardtanh / clamp node (its output is quantized with the Clip
    dropped: ONNX Runtime folds the Clip into the range)."""
    import torch

    aten = torch.ops.aten
    if node.op != "call_function":
        return None
    if node.target is aten.relu6.default:
        return 6.0
    if node.target in (aten.hardtanh.default, aten.clamp.default):
        default = 1.0 if node.target is aten.hardtanh.default else None
        value = _argument(node, 2, "max_val" if default else "max", default)
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
) -> tuple[dict[str, str], list[str]]:
    """``{ONNX weight: QuantLayer target}`` by name (``<target>.weight``), else by value; and
    the weights with no QuantLayer (a layer the capture did not make a module)."""

    inits = constants(prepared)
    folded = {t: _layer(gm, t).folded()[0].detach().numpy() for t in targets}
    found, unmatched = {}, []
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
        if target:
            found[name] = target
        else:
            unmatched.append(name)
    return found, unmatched


def _nodes_touching(model: onnx.ModelProto, tensors: set[str], weights: set[str]) -> set[str]:
    """Names of the int8-capable nodes that read or write one of ``tensors``, or read one of
    ``weights``: the nodes to keep in float when those have no PyTorch counterpart."""
    from edgeopt.graph import INT8_OP_TYPES

    found = set()
    for node in model.graph.node:
        if node.op_type not in INT8_OP_TYPES:
            continue
        if tensors & set(node.input) or tensors & set(node.output) or weights & set(node.input):
            found.add(node.name)
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


@dataclass
class _Sites:
    """Where the writer's quantized tensors are in the PyTorch graph, and what has no place."""

    weights: dict[str, str]  # ONNX weight -> QuantLayer target
    groups: dict[str, list[str]]  # scale initializer -> tensors quantized with it
    nodes: dict[str, Any]  # ONNX tensor -> PyTorch node
    missing: set[str]  # quantized tensors and weights with no PyTorch counterpart


def _locate(
    gm: fx.GraphModule,
    float_gm: fx.GraphModule,
    prepared: onnx.ModelProto,
    dry_run: onnx.ModelProto,
    targets: list[str],
    probe: np.ndarray,
) -> _Sites:
    """Find each weight and activation the writer quantized in ``dry_run`` in the PyTorch
    graph (by value, on a few calibration samples)."""
    from edgeopt.stages.quantize.calibrate import run_batches
    from edgeopt.stages.quantize.qdq import written_weight_scales

    weights, missing_weights = _match_weights(
        gm, prepared, list(written_weight_scales(dry_run)), targets
    )
    groups = _activation_groups(dry_run)
    names = [name for tensors in groups.values() for name in tensors]
    # ONNX Runtime's writer renames a quantized graph output X to X_QuantizeLinear_Input (the
    # final DequantizeLinear takes the name X): the fp32 file holds that tensor as X.
    outputs = {o.name for o in prepared.graph.output}
    in_fp32 = {
        name: base if base in outputs else name
        for name in names
        for base in [name.removesuffix("_QuantizeLinear_Input")]
    }
    probed = list(dict.fromkeys(in_fp32.values()))
    values = next(run_batches(prepared, probe, probed, batch_size=len(probe))) if names else {}
    onnx_values = {name: values[in_fp32[name]] for name in names}
    torch_values = _node_outputs(float_gm, probe)
    nodes: dict[str, Any] = {}
    missing = set(missing_weights)
    for tensor in names:
        node = _find_node(gm, onnx_values[tensor], torch_values, {n.name for n in nodes.values()})
        if node is None:
            missing.add(tensor)
        else:
            nodes[tensor] = node
    return _Sites(weights, groups, nodes, missing)


#: Rounds of the writer's dry run, each keeping in float the nodes of tensors PyTorch lacks.
_EXCLUSION_ROUNDS = 8


def _prepare(
    handle: ModelHandle, config: QATConfig, dataset: Dataset, scratch: Path
) -> tuple[_Prepared, Path]:
    """Capture, fold, dry-run the writer on the fp32 export, insert the fake quantizers.

    A tensor the writer would quantize but PyTorch never computes (an exporter's own
    intermediate: a layout transpose around a GRU, the inside of an inlined HardSwish) has no
    place for a fake quantizer; the int8-capable nodes reading or writing it are kept in float
    (named in the result) and the writer runs again, until every quantized tensor has its
    place. The file then computes what the fake-quantized model computes.
    """
    from edgeopt.stages.quantize.calibrate import collect_stats
    from edgeopt.stages.quantize.calibrate import ranges_from_stats
    from edgeopt.stages.quantize.fakequant import ActivationQuantizer
    from edgeopt.stages.quantize.qdq import write_qdq

    module = copy.deepcopy(handle.require_torch("QAT"))
    gm = _capture(module, handle)
    _decompose_attention(gm)
    _flatten_linears(gm)
    _modules_from_aten(gm)
    targets = _wrap_layers(gm)
    fp32_path = scratch / f"{handle.name}.fp32.onnx"
    float_gm = _float_module(gm)
    prepared = _export_float(handle, float_gm, fp32_path)
    x_calib = dataset.arrays("calib")[0]
    stats = collect_stats(prepared, x_calib)
    ranges = ranges_from_stats(prepared, stats, method=config.calibration)
    excluded: set[str] = set()
    for _ in range(_EXCLUSION_ROUNDS):
        dry_run, _ = write_qdq(
            prepared,
            ranges,
            per_channel=config.is_per_channel,
            weight_bits=config.bits,
            exclude_nodes=sorted(excluded),
        )
        sites = _locate(gm, float_gm, prepared, dry_run, targets, x_calib[:_PROBE_SAMPLES])
        more = _nodes_touching(prepared, sites.missing, sites.missing) - excluded
        if not sites.missing:
            break
        if not more:
            missing = sorted(sites.missing)[0]
            raise InputError(
                f"QAT: the int8 file quantizes {missing!r}, which the PyTorch model never "
                "computes, and keeping its layers in float did not remove it."
            )
        excluded |= more
    else:
        raise InputError(
            f"QAT: {len(excluded)} layers had to be kept in float and more still lacked a "
            "PyTorch counterpart; the model is beyond what QAT maps onto the int8 file."
        )
    is_learned = config.range_learning == "learned"
    for target in sites.weights.values():
        _layer(gm, target).quantize_weight(
            bits=config.bits, per_channel=config.is_per_channel, is_learned=is_learned
        )
    quantizers: dict[str, ActivationQuantizer] = {}
    tensors: dict[str, str] = {}
    placed: list[tuple[Any, str]] = []
    for index, (scale_name, members) in enumerate(sites.groups.items()):
        owner = next((t for t in members if f"{t}_scale" == scale_name), members[0])
        quantizer_name = f"activation_quantizer_{index}"
        for tensor in members:
            node = sites.nodes[tensor]
            placed.append((node, quantizer_name))
            tensors[tensor] = quantizer_name
            if tensor == owner:
                lo, hi = ranges[owner]
                quantizers[quantizer_name] = ActivationQuantizer(
                    lo, hi, mode=config.range_learning, upper=_upper_bound(node)
                )
    for name, quantizer in quantizers.items():
        gm.add_submodule(name, quantizer)
    for node, quantizer_name in placed:
        with gm.graph.inserting_after(node):
            call = gm.graph.call_module(quantizer_name, (node,))
        node.replace_all_uses_with(call, delete_user_cb=lambda user, call=call: user is not call)
    gm.graph.lint()
    gm.recompile()
    prepared_qat = _Prepared(gm, dict(quantizers), tensors, sites.weights, ranges, sorted(excluded))
    return prepared_qat, fp32_path


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
        exclude_nodes=prepared.excluded,
    )
    # ONNX Runtime raises a weight's scale where its int32 bias would overflow; train-time
    # arithmetic then follows the file.
    for name, written in written_weight_scales(quantized).items():
        if name in prepared.weights and not np.array_equal(written, scales[name]):
            layer = gm.get_submodule(prepared.weights[name])
            layer.fixed_scale = torch.from_numpy(np.asarray(written, dtype=np.float32))
            scales[name] = written
    return quantized, _with_modules(float_nodes, final, gm), ranges, scales


def _with_modules(labels: list[str], model: onnx.ModelProto, gm: fx.GraphModule) -> list[str]:
    """Each float node's label (``"name (Op)"``) with the PyTorch module it comes from, where
    the capture recorded one (``"node_gru (GRU) in rnn"``): the name a user knows.

    The exporter names an operator's ONNX node after its graph node (``node_<name>``); a node of
    an operator written as several ONNX nodes (GELU as Div, Erf, Add, Mul) takes the module of
    the first named node downstream.
    """
    import re

    paths: dict[str, str] = {}
    for node in gm.graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        path = str(next(reversed(stack.values()))[0]) if stack else ""
        if path and not path.startswith("_"):
            paths[node.name] = path
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    by_name = {node.name: node for node in model.graph.node}

    def path_of(name: str, depth: int = 0) -> str:
        key = re.sub(r"__\d+$", "", name.removeprefix("node_"))
        if key in paths or depth > 4 or name not in by_name:
            return paths.get(key, "")
        downstream = [c for out in by_name[name].output for c in consumers.get(out, [])]
        return next((p for c in downstream if (p := path_of(c.name, depth + 1))), "")

    named = []
    for label in labels:
        path = path_of(label.rsplit(" (", 1)[0])
        named.append(f"{label} in {path}" if path else label)
    return named


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
        InputError: an ONNX-only model, a model ``torch.export`` cannot capture with a free
            batch dimension.

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
