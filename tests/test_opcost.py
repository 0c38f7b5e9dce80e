"""What each operator costs (issue 14, item 5): MACs of recurrent cells, attention, transposed and
1-D convolutions, broadcast matrix products and Einsum equal the hand-computed formulas of
``edgeopt.opcost``; element ops of normalizations and activations are the stated constants; an
operator of unknown cost is listed and makes the estimate a lower bound, never a traceback."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper
from onnx import numpy_helper
from rich.console import Console

from edgeopt.graph import Layer
from edgeopt.graph import analyse
from edgeopt.graph import read_graph
from edgeopt.measure import profile_onnx
from edgeopt.opcost import op_cost
from edgeopt.report.console import render_metrics
from edgeopt.target import Target

FLOAT = TensorProto.FLOAT


def model(
    nodes: list[Any],
    inputs: dict[str, list[int]],
    output: str,
    weights: dict[str, tuple[int, ...]] | None = None,
    *,
    opset: int = 18,
    output_shape: list[int] | None = None,
) -> Any:
    """A one-output float graph; ``weights`` become zero initializers of those shapes; the
    output's shape is left to inference unless given (a file the checker passes needs one)."""
    initializers = [
        numpy_helper.from_array(np.zeros(shape, np.float32), name)
        for name, shape in (weights or {}).items()
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(name, FLOAT, shape) for name, shape in inputs.items()],
        [helper.make_tensor_value_info(output, FLOAT, output_shape)],
        initializers,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return proto


def layer(proto: Any, name: str) -> Layer:
    return next(layer for layer in analyse(proto)[1] if layer.name == name)


# -- recurrent cells -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("op", "gates", "ops_per_unit"), [("LSTM", 4, 9), ("GRU", 3, 8), ("RNN", 1, 1)]
)
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
def test_recurrent_macs_are_gates_times_hidden_times_input_plus_hidden_per_step_and_direction(
    op: str, gates: int, ops_per_unit: int, direction: str, layout: int
) -> None:
    seq, features, hidden = 7, 3, 5
    directions = 2 if direction == "bidirectional" else 1
    # The graph input is batch-first (read_graph fixes its first dimension to the batch, 1);
    # layout 0 takes the sequence first, so a Transpose makes it.
    nodes = []
    source = "x"
    if layout == 0:
        nodes.append(helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2], name="t"))
        source = "xt"
    nodes.append(
        helper.make_node(
            op,
            [source, "w", "r", "b"],
            ["y"],
            name="cell",
            hidden_size=hidden,
            direction=direction,
            layout=layout,
        )
    )
    weights = {
        "w": (directions, gates * hidden, features),
        "r": (directions, gates * hidden, hidden),
        "b": (directions, 2 * gates * hidden),
    }
    cell = layer(model(nodes, {"x": [1, seq, features]}, "y", weights), "cell")
    assert cell.macs == seq * directions * gates * hidden * (features + hidden)
    assert cell.ops == seq * directions * hidden * ops_per_unit
    assert cell.kind == "fc" and cell.is_counted


# -- matrix products: attention's activations, broadcasting, Gemm ----------------------------------
def test_matmul_of_two_activations_counts_batch_and_head_dimensions() -> None:
    heads, length, head_size = 2, 5, 8
    nodes = [
        helper.make_node("MatMul", ["q", "kt"], ["scores"], name="qk"),
        helper.make_node("Softmax", ["scores"], ["p"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["y"], name="av"),
    ]
    inputs = {
        "q": [1, heads, length, head_size],
        "kt": [1, heads, head_size, length],
        "v": [1, heads, length, head_size],
    }
    layers = {layer.name: layer for layer in analyse(model(nodes, inputs, "y"))[1]}
    assert layers["qk"].macs == heads * length * length * head_size == 400
    assert layers["av"].macs == heads * length * head_size * length == 400
    assert layers["softmax"].macs == 0 and layers["softmax"].ops == 5 * heads * length * length


def test_matmul_broadcasts_its_batch_dimensions_and_gemm_reads_trans_a() -> None:
    nodes = [helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")]
    # a [1, 1, 5, 8] x b [3, 8, 4] -> [1, 3, 5, 4]: 3 products of 5x8 by 8x4
    proto = model(nodes, {"a": [1, 1, 5, 8]}, "y", {"b": (3, 8, 4)})
    assert layer(proto, "mm").macs == 3 * 5 * 4 * 8
    nodes = [
        helper.make_node("Transpose", ["x"], ["a"], name="t", perm=[1, 0]),
        helper.make_node("Gemm", ["a", "w"], ["y"], name="fc", transA=1),  # a is [K = 6, M = 1]
    ]
    proto = model(nodes, {"x": [1, 6]}, "y", {"w": (6, 4)})
    assert layer(proto, "fc").macs == 1 * 4 * 6


# -- convolutions ----------------------------------------------------------------------------------
def test_conv_transpose_macs_are_input_channels_per_group_times_outputs_kernel_and_input_size() -> (
    None
):
    c_in, c_out, group, size = 4, 6, 2, 7
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", strides=[2, 2], group=group)
    ]
    proto = model(nodes, {"x": [1, c_in, size, size]}, "y", {"w": (c_in, c_out // group, 3, 3)})
    assert layer(proto, "up").macs == c_in // group * c_out * 9 * size * size == 5_292


def test_conv1d_macs_are_outputs_times_input_channels_per_group_times_kernel() -> None:
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", group=2)]
    proto = model(nodes, {"x": [1, 4, 20]}, "y", {"w": (6, 2, 3)})
    assert layer(proto, "conv").macs == 6 * 18 * 2 * 3


# -- Einsum ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("equation", "shapes", "macs"),
    [
        ("bhqd,bhkd->bhqk", [[1, 2, 5, 8], [1, 2, 6, 8]], 2 * 5 * 6 * 8),
        ("...qd, ...kd -> ...qk", [[1, 2, 5, 8], [2, 1, 6, 8]], 2 * 2 * 5 * 6 * 8),  # broadcast
        ("ij,jk", [[1, 3], [3, 4]], 3 * 4),  # implicit output
        ("bi,bi->b", [[1, 7], [1, 7]], 7),  # a batched dot product
    ],
)
def test_einsum_of_two_operands_costs_the_product_of_its_label_sizes(
    equation: str, shapes: list[list[int]], macs: int
) -> None:
    nodes = [helper.make_node("Einsum", ["a", "b"], ["y"], name="e", equation=equation)]
    found = layer(model(nodes, {"a": shapes[0]}, "y", {"b": tuple(shapes[1])}), "e")
    assert (found.macs, found.kind, found.is_counted) == (macs, "fc", True)


def test_einsum_of_one_operand_is_element_ops_and_of_three_is_uncounted() -> None:
    nodes = [helper.make_node("Einsum", ["a"], ["y"], name="e", equation="bij->bji")]
    found = layer(model(nodes, {"a": [1, 3, 4]}, "y"), "e")
    assert (found.macs, found.ops, found.is_counted) == (0, 12, True)
    nodes = [helper.make_node("Einsum", ["a", "b", "c"], ["y"], name="e", equation="ij,jk,kl->il")]
    found = layer(model(nodes, {"a": [1, 3], "b": [1, 3], "c": [3, 2]}, "y"), "e")
    assert (found.macs, found.is_counted) == (0, False)


# -- Attention (opset 23) --------------------------------------------------------------------------
@pytest.mark.parametrize("rank", [3, 4])
def test_attention_macs_are_scores_times_query_and_value_head_sizes(rank: int) -> None:
    heads, q_len, kv_len, head, v_head = 2, 5, 6, 8, 4
    if rank == 4:
        inputs = {"q": [1, heads, q_len, head], "k": [1, heads, kv_len, head]}
        inputs["v"] = [1, heads, kv_len, v_head]
        attrs: dict[str, int] = {}
    else:
        inputs = {"q": [1, q_len, heads * head], "k": [1, kv_len, heads * head]}
        inputs["v"] = [1, kv_len, heads * v_head]
        attrs = {"q_num_heads": heads, "kv_num_heads": heads}
    nodes = [helper.make_node("Attention", ["q", "k", "v"], ["y"], name="attn", **attrs)]
    found = layer(model(nodes, inputs, "y", opset=23), "attn")
    scores = heads * q_len * kv_len
    assert (found.macs, found.ops) == (scores * (head + v_head), scores * 6) == (720, 360)


# -- element ops -----------------------------------------------------------------------------------
def test_layer_norm_gelu_and_resize_cost_their_stated_ops_per_element() -> None:
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g", "b"], ["n"], name="ln", axis=-1),
        helper.make_node("Gelu", ["n"], ["a"], name="gelu"),
        helper.make_node("Gelu", ["a"], ["t"], name="gelu_tanh", approximate="tanh"),
        helper.make_node("Resize", ["t", "", "s"], ["y"], name="up", mode="linear"),
    ]
    weights = {"g": (8,), "b": (8,)}
    proto = model(nodes, {"x": [1, 2, 4, 8]}, "y", weights, opset=20)
    proto.graph.initializer.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s"))
    layers = {found.name: found for found in analyse(proto)[1]}
    elements = 2 * 4 * 8
    assert layers["ln"].ops == 7 * elements and layers["ln"].macs == 0
    assert layers["gelu"].ops == 5 * elements
    assert layers["gelu_tanh"].ops == 9 * elements
    assert layers["up"].ops == 4 * elements * 2 * 2  # 4 times the outputs, 2 taps per axis
    assert all(found.is_counted for found in layers.values())


def test_the_estimate_prices_a_layers_macs_and_its_element_ops() -> None:
    target = Target.from_name("cortex-m4")
    nodes = [helper.make_node("GRU", ["x", "w", "r"], ["y"], name="gru", hidden_size=4, layout=1)]
    weights = {"w": (1, 12, 3), "r": (1, 12, 4)}
    gru = layer(model(nodes, {"x": [1, 6, 3]}, "y", weights), "gru")
    cycles = (
        gru.macs * target.cycles_per_mac["fc"]["float32"]
        + gru.ops * target.cycles_per_element["float32"]
        + gru.bytes_moved * target.cycles_per_byte
        + target.layer_overhead_cycles
    )
    assert target.layer_cycles(gru) == pytest.approx(cycles) and gru.macs == 6 * 12 * 7


# -- what is not known -----------------------------------------------------------------------------
def unknown_op_file(tmp_path: Path) -> Path:
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"),
        helper.make_node("Reshape", ["h", "shape"], ["m"], name="square"),
        helper.make_node("Det", ["m"], ["y"], name="det"),  # no cost edgeopt.opcost knows
    ]
    proto = model(nodes, {"x": [1, 4]}, "y", {"w": (4, 16)}, output_shape=[1])
    proto.graph.initializer.append(numpy_helper.from_array(np.array([1, 4, 4], np.int64), "shape"))
    path = tmp_path / "det.onnx"
    onnx.save(proto, str(path))
    return path


def test_an_operator_of_unknown_cost_is_listed_and_the_estimate_is_a_lower_bound(
    tmp_path: Path,
) -> None:
    metrics = profile_onnx(
        unknown_op_file(tmp_path), target=Target.from_name("cortex-m4"), is_latency_measured=False
    )
    assert metrics.uncounted_ops == ("det (Det)",) and metrics.macs == 4 * 16
    assert metrics.estimate is not None and metrics.estimate.uncounted_ops == ("det (Det)",)
    assert "lower bound" in metrics.estimate.method
    assert "lower bound" in metrics.provenance["estimate"]
    assert "det (Det)" in metrics.provenance["estimate"]
    payload = json.loads(json.dumps(metrics.to_dict()))
    assert payload["uncounted_ops"] == ["det (Det)"]
    assert payload["estimate"]["uncounted_ops"] == ["det (Det)"]
    det = next(entry for entry in payload["layers"] if entry["name"] == "det")
    assert det["is_counted"] is False
    out = io.StringIO()
    render_metrics(metrics, console=Console(file=out, width=100, markup=False))
    shown = out.getvalue()
    assert "counted (lower bound)" in shown and "estimated (lower bound)" in shown
    assert "det (Det)" in shown


def test_a_fully_counted_graph_lists_nothing_and_its_estimate_is_plain(tmp_path: Path) -> None:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")]
    path = tmp_path / "fc.onnx"
    onnx.save(model(nodes, {"x": [1, 4]}, "y", {"w": (4, 16)}, output_shape=[1, 16]), str(path))
    metrics = profile_onnx(path, target=Target.from_name("cortex-m4"), is_latency_measured=False)
    assert metrics.uncounted_ops == () and metrics.to_dict()["uncounted_ops"] == []
    assert metrics.estimate is not None and metrics.estimate.to_dict()["method"] == "estimated"
    assert "lower bound" not in metrics.provenance["estimate"]


def test_a_node_whose_shapes_are_unknown_is_uncounted_not_a_crash() -> None:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")]
    graph = read_graph(model(nodes, {"x": [1, 4]}, "y", {"w": (4, 16)}))
    node = graph.nodes[0]
    del graph.tensors["x"]  # as if neither inference nor the runtime had given its shape
    cost = op_cost(node, graph, graph.tensors.get("y"))
    assert (cost.macs, cost.ops, cost.is_counted) == (0, 16, False)
    assert op_cost(node, graph, None).is_counted is False
    lstm = helper.make_node("LSTM", ["y", "w", "w"], ["h"], hidden_size=4)  # X of rank 2
    assert op_cost(lstm, graph, graph.tensors.get("y")).is_counted is False


# -- PyTorch models through edgeopt's own export ---------------------------------------------------
def torch_models() -> list[Any]:
    """(name, module factory, input shape, MACs by hand)."""
    from torch import nn

    class Sequence(nn.Module):
        def __init__(self, rnn: nn.Module) -> None:
            super().__init__()
            self.rnn = rnn

        def forward(self, x: Any) -> Any:
            return self.rnn(x)[0]

    def recurrent() -> nn.Module:  # one export for the three cells (each export takes seconds)
        return nn.Sequential(
            Sequence(nn.GRU(8, 16, batch_first=True)),
            Sequence(nn.LSTM(16, 16, 2, batch_first=True, bidirectional=True)),
            Sequence(nn.RNN(32, 16, batch_first=True)),  # exported unrolled, as MatMuls
        )

    def encoder() -> nn.Module:  # attention, LayerNorm and GELU
        block = nn.TransformerEncoderLayer(16, 2, 32, 0.0, "gelu", batch_first=True)
        return nn.TransformerEncoder(block, 1, enable_nested_tensor=False)

    seq, d, ff, heads = 5, 16, 32, 2
    gru = seq * 3 * 16 * (8 + 16)
    lstm = 2 * seq * 4 * 16 * (16 + 16) + 2 * seq * 4 * 16 * (32 + 16)  # layer 2 reads both ways
    rnn = seq * 16 * (32 + 16)
    # in-projection (Q, K, V), Q.K^T and A.V per head, out-projection; then the feed-forward
    attention = 3 * seq * d * d + 2 * heads * seq * seq * (d // heads) + seq * d * d
    return [
        ("gru-lstm-rnn", recurrent, (seq, 8), gru + lstm + rnn),
        ("transformer-encoder", encoder, (seq, d), attention + 2 * seq * d * ff),
    ]


@pytest.mark.parametrize(("name", "factory", "shape", "macs"), torch_models())
def test_exported_pytorch_models_count_the_hand_computed_macs(
    name: str, factory: Any, shape: tuple[int, ...], macs: int, tmp_path: Path
) -> None:
    from edgeopt.export.onnx import export_onnx
    from edgeopt.models import ModelHandle

    handle = ModelHandle(name=name, spec=name, input_shape=shape, module=factory())
    _, layers = analyse(onnx.load(str(export_onnx(handle, tmp_path / f"{name}.onnx"))))
    assert sum(found.macs for found in layers) == macs
    assert all(found.is_counted for found in layers), [f.label for f in layers if not f.is_counted]
    if name == "transformer-encoder":  # LayerNormalization: 7 ops per element
        norms = [found for found in layers if found.op_type == "LayerNormalization"]
        assert len(norms) == 2 and all(found.ops == 7 * shape[0] * shape[1] for found in norms)
        erf = [found for found in layers if found.op_type == "Erf"]  # GELU, decomposed
        assert len(erf) == 1 and all(found.ops == shape[0] * 32 for found in erf)
