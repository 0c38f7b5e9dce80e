"""PTQ of ONNX files from elsewhere (issue 14, item 3): an IR-3 / opset-7 classifier in the
style of CNTK's MNIST model, an exporter's upsample-and-concatenate net, and the failures
ONNX Runtime's quantization tools meet, each one sentence naming the node, with nothing left
in the working directory."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper
from onnx import numpy_helper

from clitools import run_cli
from edgeopt.errors import InputError
from edgeopt.stages.quantize import PTQConfig
from edgeopt.stages.quantize import quantize
from edgeopt.stages.quantize.qdq import prepare
from edgeopt.stages.quantize.qdq import write_qdq


def _cntk_style(source: Path, path: Path) -> Path:
    """Rewrite edgeopt's trained cnn-s export the way CNTK wrote its MNIST model: IR 3,
    opset 7, every initializer listed as a graph input too, the normalization inside the
    graph (the file takes raw 0-16 pixels and carries no edgeopt metadata), convolution biases
    as separate Adds of shape [C, 1, 1] and a Gemm bias of shape [1, N]."""
    model = onnx.load(str(source))
    props = {p.key: p.value for p in model.metadata_props}
    norm = json.loads(props["edgeopt.normalization"])
    stored = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    consts: dict[str, np.ndarray] = {
        "pixel_mean": np.array(norm["mean"][:1], np.float32),
        "pixel_std": np.array(norm["std"][:1], np.float32),
    }
    first = model.graph.input[0].name
    nodes = [
        helper.make_node("Sub", ["Input3", "pixel_mean"], ["centered"], name="Minus1"),
        helper.make_node("Div", ["centered", "pixel_std"], [first], name="Divide1"),
    ]
    output = model.graph.output[0].name
    for index, node in enumerate(model.graph.node):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        ins, outs = list(node.input), list(node.output)
        if node.op_type == "Conv":
            consts[ins[1]] = stored[ins[1]]
            consts[f"{ins[2]}_c"] = stored[ins[2]].reshape(-1, 1, 1)
            kept = {k: attrs[k] for k in ("pads", "strides", "kernel_shape", "group") if k in attrs}
            nodes.append(
                helper.make_node("Conv", ins[:2], [f"{outs[0]}_nb"], name=f"Conv{index}", **kept)
            )
            nodes.append(
                helper.make_node("Add", [f"{outs[0]}_nb", f"{ins[2]}_c"], outs, name=f"Plus{index}")
            )
        elif node.op_type == "MaxPool":
            kept = {k: attrs[k] for k in ("pads", "strides", "kernel_shape") if k in attrs}
            nodes.append(helper.make_node("MaxPool", ins, outs, name=f"Pooling{index}", **kept))
        elif node.op_type == "ReduceMean":  # opset 7: the axes are an attribute
            axes = [int(a) for a in stored[ins[1]]]
            nodes.append(
                helper.make_node(
                    "ReduceMean", ins[:1], outs, name=f"Mean{index}", axes=axes, keepdims=1
                )
            )
        elif node.op_type == "Reshape":
            consts[ins[1]] = stored[ins[1]]
            nodes.append(helper.make_node("Reshape", ins, outs, name=f"Reshape{index}"))
        elif node.op_type == "Gemm":
            consts[ins[1]] = stored[ins[1]]
            consts[ins[2]] = stored[ins[2]].reshape(1, -1)  # CNTK's [1, N] bias
            nodes.append(helper.make_node("Gemm", ins, outs, name=f"Times{index}", transB=1))
        else:
            assert node.op_type == "Relu", node.op_type
            nodes.append(helper.make_node("Relu", ins, outs, name=f"Relu{index}"))
    initializers = [numpy_helper.from_array(value, name) for name, value in consts.items()]
    inputs = [helper.make_tensor_value_info("Input3", TensorProto.FLOAT, [1, 1, 8, 8])]
    inputs += [  # IR 3: every initializer is a graph input too
        helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
        for init in initializers
    ]
    outputs = [helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, 10])]
    graph = helper.make_graph(nodes, "CNTKGraph", inputs, outputs, initializers)
    foreign = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 7)], producer_name="CNTK"
    )
    foreign.ir_version = 3
    onnx.checker.check_model(foreign)
    onnx.save(foreign, str(path))
    return path


@pytest.fixture(scope="module")
def cntk_mnist(cnn_s, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _cntk_style(cnn_s.onnx_path, tmp_path_factory.mktemp("cntk") / "mnist.onnx")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("options", [[], ["--per-tensor"]], ids=["per-channel", "per-tensor"])
def test_cntk_style_ir3_opset7_classifier_quantizes_on_raw_pixels(
    options: list[str],
    cntk_mnist: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The done-when case: exit 0, the upgrade in the record and on the console, accuracy
    measured on the raw pixels the file expects and within 2 pp of the fp32 file's, the input
    unchanged and nothing written outside the output."""
    before = _digest(cntk_mnist)
    cwd, outdir = tmp_path / "cwd", tmp_path / "out"
    cwd.mkdir(), outdir.mkdir()
    monkeypatch.chdir(cwd)
    out = outdir / "out.onnx"
    args = ["quantize", str(cntk_mnist), "--data", "digits", "-o", str(out), *options]
    code, stdout, stderr = run_cli(args, capsys, is_out_flat=True)
    assert code == 0, stderr
    assert "Traceback" not in stdout + stderr
    assert list(cwd.iterdir()) == []
    assert sorted(p.name for p in outdir.iterdir()) == ["out.json", "out.onnx"]
    assert _digest(cntk_mnist) == before
    record = json.loads(out.with_suffix(".json").read_text())
    notes = record["steps"][0]["detail"]["notes"]
    assert any("upgraded in memory from opset 7 to 13" in note for note in notes)
    assert any("IR version 3 raised to 7" in note for note in notes)
    assert "note: upgraded in memory from opset 7 to 13" in stdout
    fp32, int8 = record["before"], record["after"]
    assert "fed as the data gives it" in fp32["provenance"]["accuracy"]  # raw 0-16 pixels
    assert fp32["accuracy"] > 0.9  # the normalization inside the graph did its work
    assert abs(fp32["accuracy"] - int8["accuracy"]) <= 0.02
    written = onnx.load(str(out))
    assert written.ir_version >= 7
    assert written.opset_import[0].version >= 13
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in written.graph.node}


def _upsample_net(path: Path) -> Path:
    """A U-Net-style net exported by torch.onnx with a symbolic batch, height and width: a
    Resize's output concatenated with the skip stopped ONNX Runtime's symbolic shape inference
    ("Incomplete symbolic shape inference"), which left files in the working directory."""
    import torch

    from corpus.usermodels import unet_ish

    torch.manual_seed(0)
    torch.onnx.export(
        unet_ish().eval(),
        (torch.randn(1, 1, 8, 8),),
        str(path),
        input_names=["x"],
        dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}},
        dynamo=False,
    )
    return path


def test_upsample_concat_net_quantizes_and_leaves_no_file(
    tmp_path: Path, digits, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _upsample_net(tmp_path / "unet.onnx")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    result = quantize(str(source), PTQConfig(), data=digits, output=tmp_path / "q.onnx")
    assert list(cwd.iterdir()) == []
    assert any("H, W bound to the data's 1x8x8" in note for note in result.notes)
    assert "upgraded" not in " ".join(result.notes)  # opset 17: nothing to upgrade
    assert any(label.endswith("(Resize)") for label in result.float_nodes)


def _gemm(bias_shape: tuple[int, ...], *, is_prepared: bool = False) -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    bias = numpy_helper.from_array(np.arange(3, dtype=np.float32).reshape(bias_shape), "b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    if is_prepared:  # prepare() returns such a model as it is
        model.metadata_props.add(key="onnx.quant.pre_process", value="onnxruntime.quant")
    return model


def test_a_gemm_bias_of_shape_1_n_is_prepared_as_a_vector() -> None:
    prepared = prepare(_gemm((1, 3)))
    bias = next(init for init in prepared.graph.initializer if init.name == "b")
    assert list(bias.dims) == [3]
    assert numpy_helper.to_array(bias).tolist() == [0.0, 1.0, 2.0]


def test_a_quantizer_failure_names_the_node_and_op(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ONNX Runtime's quantizer fails on a [1, N] bias without naming anything (here one that
    skipped the pre-processing that reshapes it); the sentence names the Gemm."""
    monkeypatch.chdir(tmp_path)
    ranges = {"x": (-1.0, 1.0), "y": (-4.0, 4.0)}
    with pytest.raises(InputError, match=r"^fc\.onnx: .*quantizer fails on node 'fc' \(Gemm\)"):
        write_qdq(_gemm((1, 3), is_prepared=True), ranges, source="fc.onnx")
    assert list(tmp_path.iterdir()) == []


def test_pre_processing_that_fails_names_the_node_shape_inference_stopped_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Symbolic shape inference stops at an operator it does not know (and saves its model
    into the working directory); when ONNX's shape inference fails too, the sentence names
    that node, and the working directory stays empty."""
    import onnxruntime.quantization.shape_inference as shape_inference

    real = shape_inference.quant_pre_process

    def without_fallback(model: onnx.ModelProto, out: str, **options: bool) -> None:
        if options.get("skip_symbolic_shape"):
            raise RuntimeError("no shapes")
        real(model, out, **options)

    monkeypatch.setattr(shape_inference, "quant_pre_process", without_fallback)
    monkeypatch.chdir(tmp_path)
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["a"], name="first"),
            helper.make_node("Mystery", ["a"], ["b"], name="custom", domain="com.example"),
            helper.make_node("Relu", ["b"], ["y"], name="last"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)],
    )
    with pytest.raises(InputError, match=r"stops at node 'custom' \(Mystery\)") as caught:
        prepare(model, source="custom.onnx")
    assert str(caught.value).startswith("custom.onnx: ONNX Runtime cannot pre-process")
    assert list(tmp_path.iterdir()) == []
