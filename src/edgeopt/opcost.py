"""What each ONNX operator of a graph costs: multiply-accumulates (MACs) and element operations.

Why two counts: a device spends its multiply-accumulate units on convolutions, matrix products
and recurrent cells (MACs, priced by a target's ``cycles_per_mac``) and its scalar pipeline on
everything else (element operations, "ops", priced by ``cycles_per_element``). Why a third
state: an operator this module does not know is *uncounted* (``Cost.is_counted`` False) instead
of silently free, so that the profile can list it and the estimate can say it is a lower bound.

MACs, at the shapes of the graph (batch 1; formulas from the ONNX operator docs,
https://onnx.ai/onnx/operators/):

- ``Conv`` (1-D, 2-D, 3-D), ``ConvInteger``, ``QLinearConv``: output elements x C_in/group x
  kernel elements (W is ``[C_out, C_in/group, k...]``).
- ``ConvTranspose``: input elements x C_out/group x kernel elements (W is
  ``[C_in, C_out/group, k...]``: every input pixel scatters one kernel per output channel of its
  group), i.e. C_in/group x C_out x kernel x input spatial size.
- ``Gemm``, ``MatMul``, ``MatMulInteger``, ``QLinearMatMul``: output elements x K (the shared
  dimension). The output shape already holds the broadcast batch and head dimensions, so a
  MatMul of two activations, attention's Q.K^T (``[B, h, S, d] x [B, h, d, S]``) and A.V,
  counts B.h.S.S.d.
- ``LSTM``, ``GRU``, ``RNN``: sequence length x batch x (elements of W + elements of R). W is
  ``[directions, gates.H, I]`` and R ``[directions, gates.H, H]`` (gates: LSTM 4, GRU 3,
  RNN 1), so per step and direction an LSTM does 4.H.(I + H) MACs, a GRU 3.H.(I + H) and an
  RNN H.(I + H). The full ``seq_length`` of X is counted (``sequence_lens`` may stop a
  batch entry early: an upper bound for such an entry).
- ``Attention`` (opset 23): Q.K^T and probabilities.V, batch x q heads x q length x kv length x
  (head size + v head size), kv length including ``past_key``.
- ``Einsum`` with two operands: the product of the sizes of all its labels (the naive
  contraction: every combination of indices is one multiply-add; opt_einsum counts the same,
  https://optimized-einsum.readthedocs.io/). With one operand (a transpose, trace or sum) no
  MACs; with three or more, uncounted (the cost depends on the contraction order).

Element ops (what a layer that is not a MAC layer costs): one per output element for
element-wise operators, pooling, reductions and data movement (Transpose, Concat, Gather, Cast
copy or convert each element once: unchanged from the estimate's earlier output-element count);
none for views (Reshape, Squeeze, ... change no byte) and for MAC layers (bias and fused
activation ride along). Stated constants per output element where one element costs more:
``OPS_PER_ELEMENT`` (Softmax 5, LayerNormalization 7, GELU 5, ...), ``Resize`` one op per
interpolation tap (nearest 1, linear 2 and cubic 4 per resized axis), recurrent cells
``RECURRENT_OPS_PER_UNIT`` per hidden unit and step, attention 6 per score (scale and softmax).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from edgeopt.graph import Graph
    from edgeopt.graph import TensorInfo

#: Convolutions and matrix products: operator -> position of the weight (second operand).
CONV_OPS = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "ConvTranspose": 1}
MATMUL_OPS = {"Gemm": 1, "MatMul": 1, "MatMulInteger": 1, "QLinearMatMul": 3}
#: Recurrent cells: gates per hidden unit (ONNX LSTM i, o, f, c; GRU z, r, h; RNN one).
RECURRENT_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
#: Element ops per hidden unit and step besides the MACs: LSTM 3 sigmoids + 1 tanh, c = f.c + i.g
#: (3), h = o.tanh(c) (2) = 9; GRU 2 sigmoids + 1 tanh, r.(R_h h) (1), h = (1 - z).h~ + z.h (4) =
#: 8; RNN its tanh.
RECURRENT_OPS_PER_UNIT = {"LSTM": 9, "GRU": 8, "RNN": 1}
POOL_OPS = {
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "QLinearAveragePool",
    "QLinearGlobalAveragePool",
    "ReduceMean",  # adaptive average pooling to 1x1 exports as ReduceMean over H, W
    "ReduceMax",
}
#: Views: they change the shape, not a byte, and cost nothing.
VIEW_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}
#: Data movement and bookkeeping: no arithmetic, one op per element written (a copy).
MOVEMENT_OPS = frozenset(
    {
        "Transpose",
        "Concat",
        "QLinearConcat",
        "Split",
        "Slice",
        "Gather",
        "GatherElements",
        "GatherND",
        "ScatterElements",
        "ScatterND",
        "Expand",
        "Tile",
        "Pad",
        "Cast",
        "CastLike",
        "Shape",
        "Size",
        "Constant",
        "ConstantOfShape",
        "Range",
        "DepthToSpace",
        "SpaceToDepth",
        "Trilu",
        "OneHot",
        "EyeLike",
        "ReverseSequence",
    }
)
#: One op per output element: arithmetic, activations, comparisons, reductions and pooling
#: (a reduction's or pool's reads are its ``bytes_moved``).
ELEMENTWISE_OPS = POOL_OPS | {
    *("Add", "Sub", "Mul", "Div", "Pow", "Mod", "Sqrt", "Reciprocal", "Neg", "Abs", "Sign"),
    *("Exp", "Log", "Erf", "Tanh", "Sigmoid", "HardSigmoid", "HardSwish", "Relu", "LeakyRelu"),
    *("PRelu", "Clip", "Elu", "Selu", "Celu", "ThresholdedRelu", "Mish", "Softplus", "Softsign"),
    *("Sin", "Cos", "Floor", "Ceil", "Round", "Min", "Max", "Sum", "Mean", "Where", "Equal"),
    *("Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN"),
    *("IsInf", "BitShift", "CumSum", "ArgMax", "ArgMin", "ReduceSum", "ReduceMin", "ReduceProd"),
    *("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "LpPool"),
    *("GlobalLpPool", "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu"),
}
#: Element ops per output element of operators that do several things per element:
#: Softmax and LogSoftmax: max, subtract, exp, sum, divide (or subtract the log) = 5;
#: LayerNormalization (and Group / Instance): mean, subtract, square, sum, scale by 1/sigma,
#: gamma, beta = 7 (the per-row sqrt is left out); mean-variance normalization without gamma,
#: beta 5; RMSNormalization: square, sum, scale, gamma = 4; LpNormalization (p = 2): square, sum,
#: scale = 3; BatchNormalization at inference: scale and shift = 2; Hardmax: compare, write = 2;
#: GELU (erf form): x / sqrt 2, erf, + 1, x x, x 0.5 = 5, the ops its decomposed export
#: (Div, Erf, Add, Mul, Mul) counts too; the tanh form is priced in :func:`_elementwise_ops`.
OPS_PER_ELEMENT = {
    "Softmax": 5,
    "LogSoftmax": 5,
    "Hardmax": 2,
    "LayerNormalization": 7,
    "GroupNormalization": 7,
    "InstanceNormalization": 7,
    "MeanVarianceNormalization": 5,
    "RMSNormalization": 4,
    "LpNormalization": 3,
    "BatchNormalization": 2,
    "Gelu": 5,
}
#: GELU's tanh approximation: x^3 (2), x 0.044715, + x, x sqrt(2/pi), tanh, + 1, x x, x 0.5.
GELU_TANH_OPS = 9
#: Ops per attention score: the scale and the softmax (5).
ATTENTION_OPS_PER_SCORE = 6
#: Interpolation taps per resized axis of ``Resize`` by mode (nearest reads one input element).
RESIZE_TAPS = {"nearest": 1, "linear": 2, "cubic": 4}


@dataclass(frozen=True)
class Cost:
    """What one node costs: MACs, element ops, and whether this module knows its cost at all
    (an uncounted node's ``ops`` are its output elements, so the estimate keeps a floor)."""

    macs: int
    ops: int
    is_counted: bool = True


class _UnknownError(Exception):
    """A shape or attribute the cost needs is not in the graph: the node is uncounted."""


def op_cost(node: Any, graph: Graph, out: TensorInfo | None) -> Cost:
    """MACs and element ops of ``node`` (output ``out``, None when its shape is unknown), or
    an uncounted :class:`Cost` when the operator is unknown or a shape it needs is missing."""
    floor = out.elements if out is not None else 0
    try:
        return _cost(node, graph, out)
    except (_UnknownError, IndexError, ValueError):  # odd graphs: never a traceback
        return Cost(0, floor, is_counted=False)


def _cost(node: Any, graph: Graph, out: TensorInfo | None) -> Cost:  # noqa: C901  (one branch per family of operators, each a formula of the module docstring)
    op = node.op_type
    if op in VIEW_OPS:
        return Cost(0, 0)
    if out is None:
        raise _UnknownError(op)
    if op in CONV_OPS:
        weight = _shape(graph, node.input[CONV_OPS[op]])
        kernel = math.prod(weight[2:])
        if op == "ConvTranspose":
            return Cost(math.prod(_shape(graph, node.input[0])) * weight[1] * kernel, 0)
        return Cost(out.elements * weight[1] * kernel, 0)
    if op in MATMUL_OPS:
        a = _shape(graph, node.input[0])
        k = a[-2] if (op == "Gemm" and _attribute(node, "transA", 0)) else a[-1]
        return Cost(out.elements * k, 0)
    if op in RECURRENT_GATES:
        return _recurrent(node, graph)
    if op == "Attention":
        return _attention(node, graph, out)
    if op == "Einsum":
        return _einsum(node, graph)
    if op in MOVEMENT_OPS or op in ELEMENTWISE_OPS:
        return Cost(0, out.elements)
    if op in OPS_PER_ELEMENT:
        return Cost(0, out.elements * _per_element(node))
    if op in ("Resize", "Upsample"):
        return _resize(node, graph, out)
    raise _UnknownError(op)


def _shape(graph: Graph, name: str) -> tuple[int, ...]:
    info = graph.tensors.get(name) if name else None
    if info is None:
        raise _UnknownError(name)
    return info.shape


def _attribute(node: Any, name: str, default: Any) -> Any:
    import onnx

    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _per_element(node: Any) -> int:
    approximate = _attribute(node, "approximate", b"none")
    if node.op_type == "Gelu" and approximate in (b"tanh", "tanh"):
        return GELU_TANH_OPS
    return OPS_PER_ELEMENT[node.op_type]


def _recurrent(node: Any, graph: Graph) -> Cost:
    """ONNX LSTM / GRU / RNN: X is ``[seq, batch, I]`` (``layout`` 0) or ``[batch, seq, I]``
    (``layout`` 1); every step runs W.x and R.h for every direction (see the module docstring;
    https://onnx.ai/onnx/operators/onnx__LSTM.html, __GRU, __RNN)."""
    x = _shape(graph, node.input[0])
    w, r = _shape(graph, node.input[1]), _shape(graph, node.input[2])
    if len(x) != 3 or len(w) != 3 or len(r) != 3:
        raise _UnknownError(node.op_type)
    seq, batch = (x[1], x[0]) if _attribute(node, "layout", 0) == 1 else (x[0], x[1])
    directions, hidden = w[0], r[2]
    steps = seq * batch * directions
    macs = seq * batch * (math.prod(w) + math.prod(r))
    return Cost(macs, steps * hidden * RECURRENT_OPS_PER_UNIT[node.op_type])


def _attention(node: Any, graph: Graph, out: TensorInfo) -> Cost:
    """ONNX Attention (opset 23, https://onnx.ai/onnx/operators/onnx__Attention.html): Q, K, V
    are 4-D ``[B, heads, S, head size]`` or 3-D ``[B, S, heads x head size]`` (heads from
    ``q_num_heads``); the output has Q's layout with V's head size."""
    q, k = _shape(graph, node.input[0]), _shape(graph, node.input[1])
    past = node.input[4] if len(node.input) > 4 and node.input[4] else ""
    if len(q) == 4 and len(k) == 4 and len(out.shape) == 4:
        batch, heads, q_len, head = q
        kv_len, v_head = k[2], out.shape[3]
    elif len(q) == 3 and len(k) == 3 and len(out.shape) == 3:
        heads = int(_attribute(node, "q_num_heads", 0))
        if heads <= 0 or q[2] % heads or out.shape[2] % heads:
            raise _UnknownError("Attention heads")
        batch, q_len, head = q[0], q[1], q[2] // heads
        kv_len, v_head = k[1], out.shape[2] // heads
    else:
        raise _UnknownError("Attention shapes")
    kv_len += _shape(graph, past)[2] if past else 0
    scores = batch * heads * q_len * kv_len
    return Cost(scores * (head + v_head), scores * ATTENTION_OPS_PER_SCORE)


def _einsum(node: Any, graph: Graph) -> Cost:
    """Einsum (https://onnx.ai/onnx/operators/onnx__Einsum.html) from its equation and its
    operands' shapes: every label's size (an ellipsis stands for the broadcast of the dimensions
    it covers); two operands cost the product of all sizes in MACs, one operand as many ops."""
    equation = str(_attribute(node, "equation", b"").decode()).replace(" ", "")
    terms = equation.split("->")[0].split(",")
    inputs = [name for name in node.input if name]
    if len(terms) != len(inputs) or len(terms) > 2:
        raise _UnknownError("Einsum")
    sizes: dict[str, int] = {}
    ellipsis: tuple[int, ...] = ()
    for term, name in zip(terms, inputs, strict=True):
        shape = _shape(graph, name)
        head, _, tail = term.partition("...")
        covered = len(shape) - len(head) - len(tail)
        is_named = all(label.isalpha() for label in head + tail)
        if covered < 0 or (covered and "..." not in term) or not is_named:
            raise _UnknownError("Einsum equation")
        if "..." in term:
            import numpy as np

            ellipsis = tuple(np.broadcast_shapes(ellipsis, shape[len(head) : len(head) + covered]))
        labelled = list(zip(head, shape, strict=False))
        labelled += list(zip(tail, shape[len(shape) - len(tail) :], strict=True))
        for label, size in labelled:
            if sizes.get(label, 1) not in (1, size) and size != 1:
                raise _UnknownError("Einsum sizes")
            sizes[label] = max(sizes.get(label, 1), size)
    work = math.prod(sizes.values()) * math.prod(ellipsis)
    return Cost(work, 0) if len(terms) == 2 else Cost(0, work)


def _resize(node: Any, graph: Graph, out: TensorInfo) -> Cost:
    """Resize / Upsample: one op per interpolation tap of every output element; the taps are
    ``RESIZE_TAPS[mode]`` per axis whose size changes."""
    mode = _attribute(node, "mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode not in RESIZE_TAPS:
        raise _UnknownError(f"Resize mode {mode}")
    source = _shape(graph, node.input[0])
    if len(source) != len(out.shape):
        raise _UnknownError("Resize shapes")
    resized = sum(1 for a, b in zip(source, out.shape, strict=True) if a != b)
    return Cost(0, out.elements * RESIZE_TAPS[mode] ** resized)
