"""Fold a dataset's recorded normalization into the model, so a device feeds raw sensor values.

Datasets keep samples in their raw units (uint8 pixels, digits' 0..16 levels) and record
``x_net = (x_raw - mean_c) / std_c`` per channel (:class:`edgeopt.data.Normalization`). With
``a_c = 1 / std_c`` and ``b_c = -mean_c / std_c`` the first layer's affine map absorbs it:

* Conv: ``W'[o, c, k] = W[o, c, k] * a_c`` and ``B'[o] = B[o] + sum_{c,k} W[o, c, k] * b_c``.
  That bias is exact only where every tap falls inside the image: the zero padding of a conv pads
  a *normalized* 0, which is the raw value ``mean_c``, not a raw 0. So the conv's padding moves
  into an explicit ``Pad`` whose constant is ``mean`` (applied after the Cast, in float) and the
  conv itself pads nothing: exact at the borders too. ``Pad`` has one constant for all channels,
  so when channel means differ (RGB) only the scale is folded and a ``Sub(mean)`` stays in front
  of the conv, which keeps its zero padding (still exact).
* Gemm (directly, or behind a Flatten / 2-D Reshape): the same per input feature, the shift
  added to ``C``.
* An int8 QDQ model (the input feeds a ``QuantizeLinear``): the weights are integers already,
  so the normalization is put in front of the ``QuantizeLinear`` as ``Sub`` and ``Mul`` nodes
  instead; the file still takes raw input. Folding into the fp32 model and then quantizing is
  not supported yet: calibration feeds the normalized split. The C exporter
  (:func:`edgeopt.export.c.export_c`) turns that Cast -> Sub -> Mul -> QuantizeLinear chain into
  one 256-entry table, so the library takes the raw uint8 values too.

A ``Cast`` to float comes first, and the graph input takes the raw dtype the dataset recorded
(``uint8`` for images, IDX and digits). Everything is computed in float64 and stored as float32;
:func:`fold_preprocessing` runs the folded file against the original on the test split when given
a dataset and records the largest logit difference and the top-1 agreement.

An ``audio:`` dataset's features are not a linear map of its int16 samples, so there the whole
front end (:mod:`edgeopt.export.frontend`: DFT as a Conv, mel MatMul, Log, DCT) goes in front of
the graph and the normalization folds into the first layer behind it, as above: the file takes
(N, samples) int16 PCM. Its parity is checked on the dataset's int16 test clips.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import numpy as np

from edgeopt.data.dataset import Dataset
from edgeopt.data.dataset import Normalization
from edgeopt.errors import InputError
from edgeopt.graph import GraphEditor
from edgeopt.graph import attribute

if TYPE_CHECKING:
    import onnx

    from edgeopt.export.frontend import AudioFrontend

__all__ = ["FoldResult", "fold_preprocessing", "folded_preprocessing", "require_parity"]

#: Raw dtypes a graph input may take after folding (ONNX TensorProto names).
_RAW_TYPES = {"uint8": "UINT8", "int8": "INT8", "int16": "INT16", "float32": "FLOAT"}
#: Test samples the parity check runs by default.
PARITY_SAMPLES = 1000


@dataclass(frozen=True)
class FoldResult:
    """The folded file, how the normalization went in, and its parity with the original."""

    path: Path
    method: str  # "folded into Conv ..." | "folded into Gemm ..." | "prepended ..."
    raw_dtype: str
    normalization: Normalization
    samples: int = 0
    top1_agreement: float | None = None
    max_abs_diff: float | None = None
    #: ``Dataset.frontend`` of an audio dataset whose front end went into the graph, else None.
    frontend: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "method": self.method,
            "raw_dtype": self.raw_dtype,
            "normalization": self.normalization.to_dict(),
            "frontend": self.frontend,
            "parity": None
            if self.top1_agreement is None
            else {
                "samples": self.samples,
                "top1_agreement": self.top1_agreement,
                "max_abs_diff": self.max_abs_diff,
                "reference": "the unfolded file on the normalized input, ONNX Runtime CPU",
            },
        }


class _Graph(GraphEditor):
    """The graph edits folding needs: initializer lookup, fresh names, and the nodes to put in
    front of the graph (``nodes``, in order: the Cast first when there is one)."""

    def __init__(self, model: onnx.ModelProto, where: str, *, is_cast: bool) -> None:
        super().__init__(model)
        self.model = model
        self.graph = model.graph
        self.where = where
        self.inits = {t.name: t for t in self.graph.initializer}
        x = self.graph.input[0].name
        #: The float value of the raw input that the rest of the graph reads.
        self.float_x = self.fresh(f"{x}_float") if is_cast else x
        if is_cast:
            self.add("Cast", [x], to=1, out=self.float_x)  # 1: TensorProto.FLOAT

    def add(self, op: str, inputs: list[str], *, out: str | None = None, **attributes: Any) -> str:
        """Queue a node for the front of the graph (it reads only the input and constants)."""
        out = out or self.fresh(f"raw_{op.lower()}")
        return self.node(op, inputs, out=out, name=f"fold_{op.lower()}", **attributes)

    def array(self, name: str, node: Any, what: str) -> np.ndarray:
        from onnx import numpy_helper

        if name not in self.inits:
            raise InputError(
                f"{self.where}: the {what} of {node.op_type} node {node.name or node.output[0]!r} "
                "is computed, not stored; only stored weights can take the normalization."
            )
        return np.asarray(numpy_helper.to_array(self.inits[name]), dtype=np.float64)

    def store(self, stem: str, value: np.ndarray) -> str:
        """Add ``value`` to the model's initializers under a fresh name from ``stem``."""
        from onnx import numpy_helper

        name = self.fresh(stem)
        tensor = numpy_helper.from_array(np.array(value, order="C"), name)
        self.graph.initializer.append(tensor)
        self.inits[name] = tensor
        return name

    def consumers(self, name: str) -> list[Any]:
        return [node for node in self.graph.node if name in node.input]


def _set_attribute(node: Any, name: str, value: Any) -> None:
    from onnx import helper

    for index, existing in enumerate(node.attribute):
        if existing.name == name:
            del node.attribute[index]
            break
    node.attribute.append(helper.make_attribute(name, value))


def _fold_conv(graph: _Graph, conv: Any, x: str, norm: Normalization) -> str:
    """Scale the weights per input channel, shift the bias, move the padding into a Pad."""
    weight = graph.array(conv.input[1], conv, "weight")
    out_channels, per_group = weight.shape[:2]
    groups = int(attribute(conv, "group", 1))
    channels = per_group * groups
    if channels != len(norm.mean):
        raise InputError(
            f"{graph.where}: the first Conv takes {channels} channels but the normalization "
            f"has {len(norm.mean)}."
        )
    mean = np.asarray(norm.mean, dtype=np.float64)
    scale = 1.0 / np.asarray(norm.std, dtype=np.float64)
    shift = -mean * scale
    # Input channel of every (output channel, weight channel) pair: groups take consecutive runs.
    group_of = np.arange(out_channels) // (out_channels // groups)
    channel = group_of[:, None] * per_group + np.arange(per_group)[None, :]
    spatial = (1,) * (weight.ndim - 2)
    bias = (
        graph.array(conv.input[2], conv, "bias")
        if len(conv.input) > 2 and conv.input[2]
        else np.zeros(out_channels)
    )
    auto_pad = attribute(conv, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    pads = list(attribute(conv, "pads", [0] * (2 * (weight.ndim - 2))))
    is_padded = auto_pad in ("SAME_UPPER", "SAME_LOWER") or any(pads)
    is_uniform = bool(np.all(mean == mean[0]))
    new_weight = weight * scale[channel].reshape(*channel.shape, *spatial)
    if is_padded and not (is_uniform and auto_pad in ("NOTSET", "")):
        # Pad's one constant cannot be mean_c per channel: subtract the mean in the graph and fold
        # the scale only; the conv's zero padding then pads a true 0 (exact).
        x = graph.add("Sub", [x, graph.store("raw_mean", _per_channel(mean, weight.ndim))])
        method = "folded into Conv (scale; the mean subtracted in front: per-channel padding)"
        new_bias = bias
    else:
        new_bias = bias + (weight * shift[channel].reshape(*channel.shape, *spatial)).sum(
            axis=tuple(range(1, weight.ndim))
        )
        method = "folded into Conv (scale and bias)"
        if is_padded:
            # Padding a raw mean is padding a normalized 0: exact at the borders.
            rank = weight.ndim - 2
            begin, end = pads[:rank], pads[rank:]
            full = np.array([0, 0, *begin, 0, 0, *end], dtype=np.int64)
            x = graph.add(
                "Pad",
                [
                    x,
                    graph.store("raw_pads", full),
                    graph.store("raw_pad_value", np.array(mean[0], dtype=np.float32)),
                ],
                mode="constant",
            )
            _set_attribute(conv, "pads", [0] * (2 * rank))
            method += "; its zero padding moved into a Pad of the raw mean"
    conv.input[1] = graph.store(f"{conv.input[1]}_folded", new_weight.astype(np.float32))
    bias_name = graph.store(f"{conv.output[0]}_bias_folded", new_bias.astype(np.float32))
    if len(conv.input) > 2:
        conv.input[2] = bias_name
    else:
        conv.input.append(bias_name)
    conv.input[0] = x
    return method


def _per_channel(values: np.ndarray, ndim: int) -> np.ndarray:
    return values.reshape(1, -1, *(1,) * (ndim - 2)).astype(np.float32)


def _fold_gemm(graph: _Graph, gemm: Any, x: str, scale: np.ndarray, shift: np.ndarray) -> str:
    """Scale the rows of op(B) per input feature and add the shift to C."""
    if int(attribute(gemm, "transA", 0)):
        raise InputError(f"{graph.where}: the first Gemm transposes its input; cannot fold.")
    weight = graph.array(gemm.input[1], gemm, "weight")
    is_transposed = bool(int(attribute(gemm, "transB", 0)))
    op_b = weight.T if is_transposed else weight  # (features, outputs)
    if op_b.shape[0] != len(scale):
        raise InputError(
            f"{graph.where}: the first Gemm takes {op_b.shape[0]} features but the input has "
            f"{len(scale)}."
        )
    alpha = float(attribute(gemm, "alpha", 1.0))
    beta = float(attribute(gemm, "beta", 1.0))
    new_op_b = op_b * scale[:, None]
    added = alpha * (shift @ op_b)  # (outputs,)
    if len(gemm.input) > 2 and gemm.input[2]:
        c = graph.array(gemm.input[2], gemm, "bias")
        if beta == 0.0:
            new_c, beta = np.broadcast_to(c, np.broadcast_shapes(c.shape, added.shape)) * 0, 1.0
            new_c = new_c + added
        else:
            new_c = c + added / beta
    else:
        new_c, beta = added, 1.0
    _set_attribute(gemm, "beta", beta)
    new_weight = new_op_b.T if is_transposed else new_op_b
    gemm.input[1] = graph.store(f"{gemm.input[1]}_folded", new_weight.astype(np.float32))
    c_name = graph.store(f"{gemm.output[0]}_bias_folded", np.asarray(new_c, np.float32))
    if len(gemm.input) > 2:
        gemm.input[2] = c_name
    else:
        gemm.input.append(c_name)
    if gemm.input[0] == graph.graph.input[0].name:
        gemm.input[0] = x
    return "folded into Gemm (scale and bias, per input feature)"


def _is_flatten(graph: _Graph, node: Any) -> bool:
    """Flatten at axis 1, or a Reshape to two dimensions keeping the batch: features stay in
    (C, H, W) order, so feature f belongs to channel f // (H * W)."""
    if node.op_type == "Flatten":
        return int(attribute(node, "axis", 1)) == 1
    if node.op_type == "Reshape" and node.input[1] in graph.inits:
        shape = graph.array(node.input[1], node, "shape")
        return shape.shape == (2,) and shape[1] in (-1, shape[1]) and shape[0] in (0, -1, 1)
    return False


def _rewrite(graph: _Graph, norm: Normalization, input_shape: list[int | None]) -> str:
    """Put the normalization into the graph; returns how."""
    x_name = graph.graph.input[0].name
    users = graph.consumers(x_name)
    if len(users) != 1:
        ops = ", ".join(sorted({u.op_type for u in users})) or "nothing"
        raise InputError(
            f"{graph.where}: the input feeds {len(users)} nodes ({ops}); folding needs it to "
            "feed one Conv or Gemm."
        )
    first = users[0]
    float_x = graph.float_x
    mean = np.asarray(norm.mean, dtype=np.float64)
    scale = 1.0 / np.asarray(norm.std, dtype=np.float64)
    if first.op_type == "QuantizeLinear":
        centred = graph.add("Sub", [float_x, graph.store("raw_mean", _mean_like(mean))])
        scaled = graph.add("Mul", [centred, graph.store("raw_scale", _mean_like(scale))])
        first.input[0] = scaled
        return "prepended before the QuantizeLinear (Sub, Mul): the model is int8 QDQ already"
    if first.op_type == "Conv":
        return _fold_conv(graph, first, float_x, norm)
    channels = len(mean)
    # Features in (C, H, W) order: feature f belongs to channel f // (H * W). A 2-D input
    # (N, F) is the flattened form, its F features split evenly over the channels.
    if len(input_shape) == 2 and input_shape[1] is not None and input_shape[1] % channels == 0:
        per_channel = input_shape[1] // channels
    elif (
        len(input_shape) > 2
        and input_shape[1] in (None, channels)
        and all(d is not None for d in input_shape[2:])
    ):
        per_channel = int(np.prod([d for d in input_shape[2:] if d is not None]))
    else:
        raise InputError(
            f"{graph.where}: the input shape {input_shape} does not match the normalization's "
            f"{channels} channels."
        )
    feature_scale = np.repeat(scale, per_channel)
    feature_shift = np.repeat(-mean * scale, per_channel)
    if first.op_type == "Gemm":
        return _fold_gemm(graph, first, float_x, feature_scale, feature_shift)
    if _is_flatten(graph, first):
        nexts = graph.consumers(first.output[0])
        if len(nexts) == 1 and nexts[0].op_type == "Gemm":
            first.input[0] = float_x
            return _fold_gemm(graph, nexts[0], float_x, feature_scale, feature_shift)
    raise InputError(
        f"{graph.where}: the input feeds a {first.op_type} node "
        f"({first.name or first.output[0]!r}); the normalization folds into a first Conv or Gemm "
        "only."
    )


def _mean_like(values: np.ndarray) -> np.ndarray:
    return (
        values.reshape(1, -1, 1, 1).astype(np.float32)
        if len(values) > 1
        else np.asarray(values[0], np.float32)
    )


def _normalization(source: Normalization | Dataset | str) -> tuple[Normalization, Dataset | None]:
    if isinstance(source, Normalization):
        return source, None
    from edgeopt.data import load_data

    dataset = load_data(source)
    return dataset.normalization, dataset


def fold_preprocessing(
    model: str | Path,
    normalization: Normalization | Dataset | str,
    *,
    output: str | Path,
    samples: int = PARITY_SAMPLES,
) -> FoldResult:
    """Write a copy of an ONNX model that takes raw input, its normalization folded in.

    Args:
        model: an ONNX file with one float input (fp32, or int8 QDQ from ``edgeopt quantize``).
        normalization: a :class:`Normalization`, or a dataset (or its spec) whose recorded
            normalization and raw dtype are used; with a dataset, the folded file is checked
            against the original on up to ``samples`` test samples. An ``audio:`` dataset also
            puts its log-mel / MFCC front end in the graph: the file then takes (N, samples)
            int16 PCM.
        output: the ``.onnx`` file to write, atomically; the input file is never modified.
        samples: test samples the parity check runs.

    Returns:
        The :class:`FoldResult`: where the normalization went and, with a dataset, the top-1
        agreement and the largest output difference (raw input vs normalized input).

    Raises:
        InputError: the file cannot be read, its input is already an integer, its input does not
            feed a Conv or Gemm (or a Flatten into a Gemm, or a QuantizeLinear), channel counts
            differ, the raw dtype is not one ONNX can take, ``output`` is the input, or (audio)
            the model's input shape is not the front end's output.

    Example:
        >>> import tempfile
        >>> from edgeopt.data import load_data
        >>> from edgeopt.export.onnx import export_onnx
        >>> from edgeopt.models import load_model
        >>> digits = load_data("digits")
        >>> folder = Path(tempfile.mkdtemp())
        >>> fp32 = export_onnx(load_model("zoo:cnn-s", data=digits), folder / "cnn.onnx")
        >>> folded = fold_preprocessing(fp32, digits, output=folder / "raw.onnx")
        >>> folded.raw_dtype, folded.top1_agreement
        ('uint8', 1.0)
    """
    import onnx
    from onnx import TensorProto

    from edgeopt.export.onnx import save_onnx
    from edgeopt.models import read_onnx

    source, out = Path(model), Path(output)
    if out.suffix != ".onnx":
        raise InputError(f"{out}: the output must end in .onnx.")
    if out.resolve() == source.resolve():
        raise InputError(f"{out}: the output is the input file; write the folded model elsewhere.")
    norm, dataset = _normalization(normalization)
    frontend = None
    if dataset is not None and dataset.frontend.get("features") in ("log-mel", "mfcc"):
        frontend = dict(dataset.frontend)
    raw_dtype = str(frontend["pcm_dtype"]) if frontend else norm.raw_dtype
    if raw_dtype not in _RAW_TYPES:
        raise InputError(
            f"{source}: raw dtype {raw_dtype!r} cannot be a graph input; known: "
            f"{', '.join(_RAW_TYPES)}."
        )
    proto = read_onnx(source)
    folded = onnx.ModelProto()
    folded.CopyFrom(proto)
    if len(folded.graph.input) != 1:
        raise InputError(
            f"{source}: folding needs one graph input, the file has {len(folded.graph.input)}."
        )
    graph_input = folded.graph.input[0]
    elem = graph_input.type.tensor_type.elem_type
    if elem != TensorProto.FLOAT:
        name = TensorProto.DataType.Name(elem).lower()
        raise InputError(
            f"{source}: the input {graph_input.name!r} is {name} already; only a float input "
            "has a normalization to fold."
        )
    dims = graph_input.type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    raw_type = getattr(TensorProto, _RAW_TYPES[raw_dtype])
    if frontend is None:
        graph = _Graph(folded, str(source), is_cast=raw_type != TensorProto.FLOAT)
        method = _rewrite(graph, norm, shape)
        front_nodes: list[Any] = []
    else:
        # The features are float: no Cast behind the front end, whose Cast takes the int16.
        graph = _Graph(folded, str(source), is_cast=False)
        graph.float_x = graph.fresh(f"{graph_input.name}_features")
        front = _put_frontend(graph, frontend, shape, where=f"{source}")
        front_nodes = front.nodes
        steps = "Conv DFT, power, mel MatMul, Log" + (", DCT MatMul" if frontend["mfcc"] else "")
        method = (
            f"int16 PCM through the {frontend['features']} front end in the graph ({steps}); "
            f"normalization {_rewrite(graph, norm, shape)}"
        )
        del dims[1:]
        dims.add().dim_value = front.samples
    nodes = [*front_nodes, *graph.nodes, *folded.graph.node]
    del folded.graph.node[:]
    folded.graph.node.extend(nodes)
    graph_input.type.tensor_type.elem_type = raw_type
    _drop_unused_initializers(folded)
    record: dict[str, Any] = {
        "raw_dtype": raw_dtype,
        "normalization": norm.to_dict(),
        "method": method,
    }
    if frontend is not None:
        record["frontend"] = frontend
    entry = folded.metadata_props.add()
    entry.key, entry.value = "edgeopt.preprocessing", json.dumps(record)
    try:
        onnx.checker.check_model(folded)
    except onnx.checker.ValidationError as exc:  # a bug of ours, not the user's
        raise RuntimeError(f"the folded graph is invalid: {exc}") from exc
    save_onnx(folded, out)
    result = FoldResult(out, method, raw_dtype, norm, frontend=frontend)
    if dataset is None or samples < 1:
        return result
    return _with_parity(result, source, dataset, samples)


def require_parity(result: FoldResult, *, source: str | Path, data: str | Dataset) -> None:
    """Refuse a folded file whose top-1 differs from its source's on any checked sample.

    Folding is exact up to float rounding, so one differing sample is a bug, not a tolerance
    to tune. Kept apart from :func:`fold_preprocessing` so a caller can show the parity first.

    Args:
        result: what :func:`fold_preprocessing` returned (no parity checked: nothing to refuse).
        source: the model that was folded, as the caller named it.
        data: the dataset (or its spec) whose test samples were checked.

    Raises:
        ExportError: the top-1 agreement is below 100%.

    Example:
        >>> norm = Normalization(mean=(0.5,), std=(0.25,), raw_dtype="uint8")
        >>> folded = FoldResult(Path("raw.onnx"), "prepended", "uint8", norm, 50, 0.98, 0.7)
        >>> require_parity(folded, source="m.onnx", data="digits")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        edgeopt.export.onnx.ExportError: raw.onnx: the folded model's top-1 differs from m.onnx ...
    """
    from edgeopt.export.onnx import ExportError

    agreement = result.top1_agreement
    if agreement is not None and agreement < 1.0:
        spec = data.spec if isinstance(data, Dataset) else data
        raise ExportError(
            f"{result.path}: the folded model's top-1 differs from {source} on "
            f"{1 - agreement:.2%} of {spec}'s test samples; please report it."
        )


def _put_frontend(
    graph: _Graph, frontend: dict[str, Any], shape: list[int | None], *, where: str
) -> AudioFrontend:
    """The front-end nodes from the graph input to ``graph.float_x``, their constants added;
    refuses a model whose input is not the front end's output."""
    from edgeopt.export.frontend import MIN_OPSET
    from edgeopt.export.frontend import audio_frontend

    opset = next((o.version for o in graph.model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise InputError(
            f"{where}: the audio front end needs opset {MIN_OPSET} or later; the file has "
            f"{opset}, re-export it."
        )
    front = audio_frontend(
        frontend, pcm=graph.graph.input[0].name, features=graph.float_x, fresh=graph.fresh
    )
    expected = ["N", *front.output_shape]
    if len(shape) != len(expected) or any(
        got is not None and got != want for got, want in zip(shape[1:], expected[1:], strict=False)
    ):
        shown = [d if d is not None else "N" for d in shape]
        raise InputError(
            f"{where}: the model takes input {_shape(shown)} but the {frontend['features']} front "
            f"end of the data gives {_shape(expected)}, so train the model on this data spec or "
            "set its mels, mfcc, seconds, frame_ms or hop_ms to match."
        )
    for tensor in front.initializers:
        graph.graph.initializer.append(tensor)
        graph.inits[tensor.name] = tensor
    return front


def _shape(dims: list[Any]) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"


def folded_preprocessing(model: str | Path) -> dict[str, Any] | None:
    """The record :func:`fold_preprocessing` left in a file's metadata, or None.

    It says what a file's raw input is (dtype, normalization, audio front end), e.g. for a
    report; the C exporter reads the graph itself (an int8 QDQ file folded here exports with
    ``uint8`` input mapped by a table, an audio one is refused: its front end is float).
    """
    import onnx

    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception:
        return None  # unreadable files are reported by the step that needs them
    for entry in proto.metadata_props:
        if entry.key == "edgeopt.preprocessing":
            record: dict[str, Any] = json.loads(entry.value)
            return record
    return None


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    """Remove the weights the fold replaced (kept ones are still read by some node)."""
    used = {name for node in model.graph.node for name in node.input}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def _with_parity(result: FoldResult, source: Path, dataset: Dataset, samples: int) -> FoldResult:
    """Run both files on the test split: the folded on raw values, the original normalized."""
    from dataclasses import replace

    from edgeopt.measure.int8 import make_exact_session
    from edgeopt.measure.runtime import predict

    raw = dataset.raw["test"][:samples]
    if result.frontend is not None:
        # Audio: the folded file hears the int16 clips the features were computed from.
        if dataset.test_signals is None:
            return result
        fed = dataset.test_signals[:samples]
    else:
        fed = raw.astype(result.raw_dtype)
    expected = predict(make_exact_session(source, threads=1), dataset.normalization.apply(raw))
    got = predict(make_exact_session(result.path, threads=1), fed)
    expected, got = expected.reshape(len(raw), -1), got.reshape(len(raw), -1)
    agreement = float(np.mean(expected.argmax(axis=1) == got.argmax(axis=1)))
    return replace(
        result,
        samples=len(raw),
        top1_agreement=agreement,
        max_abs_diff=float(np.max(np.abs(expected - got))),
    )
