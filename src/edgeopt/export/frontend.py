"""The ``audio:`` front end as plain ONNX ops: int16 PCM in, the model's log-mel / MFCC input out.

:func:`edgeopt.data.audio.log_mel` is not linear, so a model that takes raw int16 audio needs the
front end itself in its graph. It is built from operators every runtime has (and a C exporter
can map one to one), step for step the numpy one, with that module's own window, mel and DCT
matrices:

* ``Cast`` int16 to float and ``Unsqueeze`` to (N, 1, samples).
* Framing, Hann window and real DFT as one strided ``Conv``: kernel ``frame_length`` taps, stride
  ``hop_length``, no padding (the frames ``log_mel`` takes: the last partial frame is dropped),
  and ``2 * (n_fft // 2 + 1)`` output channels, ``window * cos`` and ``-window * sin`` of the
  DFT basis for the non-redundant bins 0..n_fft/2. The frame's zero padding to ``n_fft`` adds
  nothing to the sums, so the kernels stop at ``frame_length``. PCM's 1 / 32768 is folded into
  the kernels: a power of two, so scaling before or after the products rounds the same. The two
  all-zero sine kernels (bins 0 and n_fft/2) are kept: dropping them costs a Slice and a Pad to
  save 0.4% of the MACs.
* Power: ``Mul`` (square), ``Split`` into real and imaginary halves, ``Add``.
* ``Transpose`` to (N, frames, bins), ``MatMul`` with the mel filterbank, ``Add`` the log offset,
  ``Log``; ``MatMul`` with the DCT-II matrix for MFCCs; ``Unsqueeze`` to (N, 1, frames, coeffs).

A direct DFT is costlier than the FFT a device's DSP library runs (``frame_length`` MACs per bin
instead of ~log2(n_fft)): the Conv's MACs appear in ``edgeopt.measure``'s counts, which is the
price of a graph every runtime can execute.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

import numpy as np

from edgeopt.data.audio import dct_matrix
from edgeopt.data.audio import hann_window
from edgeopt.data.audio import mel_filterbank
from edgeopt.errors import InputError

if TYPE_CHECKING:
    import onnx

__all__ = ["AudioFrontend", "audio_frontend", "build_audio_frontend"]

#: The ``Dataset.frontend`` keys the graph is built from.
_KEYS = (
    "sample_rate",
    "samples",
    "pcm_dtype",
    "pcm_full_scale",
    "frame_length",
    "hop_length",
    "n_fft",
    "mels",
    "mfcc",
    "window",
    "mel_scale",
    "log_offset",
)
#: The only front end this builder reproduces (what ``edgeopt.data.audio`` records today).
_WINDOW, _MEL_SCALE = "hann (periodic)", "htk"
#: Lowest opset with ``axes`` and ``split`` as inputs (Unsqueeze, Split).
MIN_OPSET = 13


@dataclass(frozen=True)
class AudioFrontend:
    """Front-end nodes and their constants, ready to go in front of a model's graph."""

    nodes: list[Any]  # onnx.NodeProto, in execution order
    initializers: list[Any]  # onnx.TensorProto
    samples: int
    output_shape: tuple[int, int, int]  # per clip: (1, frames, mels or mfcc)


def audio_frontend(
    frontend: Mapping[str, object],
    *,
    pcm: str,
    features: str,
    fresh: Callable[[str], str] | None = None,
) -> AudioFrontend:
    """Build the front end's nodes from ``pcm`` (int16, (N, samples)) to ``features``.

    Args:
        frontend: ``Dataset.frontend`` of an ``audio:`` dataset.
        pcm: name of the int16 input tensor.
        features: name of the float output, (N, 1, frames, mels or mfcc).
        fresh: maps a name stem to a name unused in the graph the nodes go into; by default
            stems are made unique among the front end's own names only.

    Returns:
        The nodes, their constants, the samples per clip and the per-clip output shape.

    Raises:
        InputError: the record lacks a field (a dataset from before this front end was
            recorded), or describes a window or mel scale this builder does not reproduce.

    Example:
        >>> from edgeopt.data.audio import describe_frontend
        >>> record = describe_frontend(sample_rate=8000, mfcc=10)
        >>> front = audio_frontend(record, pcm="pcm", features="features")
        >>> [node.op_type for node in front.nodes][:4], front.output_shape
        (['Cast', 'Unsqueeze', 'Conv', 'Mul'], (1, 49, 10))
    """
    from onnx import TensorProto
    from onnx import helper
    from onnx import numpy_helper

    missing = [key for key in _KEYS if key not in frontend]
    if missing:
        raise InputError(
            f"the data's front-end record lacks {', '.join(missing)}; reload the data spec with "
            "this version of edgeopt."
        )
    if frontend["window"] != _WINDOW or frontend["mel_scale"] != _MEL_SCALE:
        raise InputError(
            f"the front end uses a {frontend['window']} window and {frontend['mel_scale']} mel "
            f"scale; only a {_WINDOW} window with the {_MEL_SCALE} scale can be put in ONNX."
        )
    if frontend["pcm_dtype"] != "int16":
        raise InputError(f"the front end takes {frontend['pcm_dtype']} PCM; only int16 is built.")
    rate, samples = _int(frontend, "sample_rate"), _int(frontend, "samples")
    frame_length, hop = _int(frontend, "frame_length"), _int(frontend, "hop_length")
    n_fft, mels, mfcc = _int(frontend, "n_fft"), _int(frontend, "mels"), _int(frontend, "mfcc")
    full_scale, log_offset = _number(frontend, "pcm_full_scale"), _number(frontend, "log_offset")
    frames = 1 + (samples - frame_length) // hop
    bins = n_fft // 2 + 1

    nodes: list[Any] = []
    initializers: list[Any] = []
    namer = fresh or _unique_names({pcm, features})

    def constant(stem: str, value: np.ndarray) -> str:
        name = namer(stem)
        initializers.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def add(op: str, inputs: list[str], stem: str, *, out: str | None = None, **attrs: Any) -> str:
        out = out or namer(stem)
        nodes.append(helper.make_node(op, inputs, [out], name=namer(f"frontend_{stem}"), **attrs))
        return out

    # Kernels in float64, stored float32: window * basis / full_scale (exact power-of-two scale).
    window = hann_window(frame_length).astype(np.float64)
    angle = 2 * np.pi * np.outer(np.arange(bins), np.arange(frame_length)) / n_fft
    kernels = np.concatenate([np.cos(angle), -np.sin(angle)]) * window / full_scale
    bank_t = mel_filterbank(sample_rate=rate, n_fft=n_fft, mels=mels).T  # float32 already

    axis1 = constant("frontend_axis1", np.array([1], np.int64))
    x = add("Cast", [pcm], "pcm_float", to=TensorProto.FLOAT)
    x = add("Unsqueeze", [x, axis1], "pcm_1d")
    dft = constant("frontend_dft_kernels", kernels[:, None, :].astype(np.float32))
    x = add("Conv", [x, dft], "dft", kernel_shape=[frame_length], strides=[hop])
    x = add("Mul", [x, x], "dft_squared")
    halves = constant("frontend_dft_halves", np.array([bins, bins], np.int64))
    real, imag = namer("dft_real_squared"), namer("dft_imag_squared")
    nodes.append(
        helper.make_node("Split", [x, halves], [real, imag], name=namer("frontend_split"), axis=1)
    )
    x = add("Add", [real, imag], "power")
    x = add("Transpose", [x], "power_frames", perm=[0, 2, 1])
    x = add("MatMul", [x, constant("frontend_mel_filterbank", np.array(bank_t))], "mel")
    offset = constant("frontend_log_offset", np.array(log_offset, np.float32))
    x = add("Add", [x, offset], "mel_offset")
    x = add("Log", [x], "log_mel")
    if mfcc:
        dct_t = dct_matrix(mels, mfcc).T.astype(np.float32)
        x = add("MatMul", [x, constant("frontend_dct", dct_t)], "mfcc")
    add("Unsqueeze", [x, axis1], "features", out=features)
    return AudioFrontend(nodes, initializers, samples, (1, frames, mfcc or mels))


def build_audio_frontend(frontend: Mapping[str, object], *, opset: int = 18) -> onnx.ModelProto:
    """Build a standalone ONNX model of the front end: ``pcm`` (N, samples) int16 -> ``features``.

    Args:
        frontend: ``Dataset.frontend`` of an ``audio:`` dataset.
        opset: default-domain opset of the model (13 or later).

    Returns:
        A checked model whose output is what :func:`edgeopt.data.audio.log_mel` returns for the
        same clips, shaped (N, 1, frames, mels or mfcc).

    Raises:
        InputError: as :func:`audio_frontend`, or ``opset`` is below 13.

    Example:
        >>> from edgeopt.data.audio import describe_frontend
        >>> model = build_audio_frontend(describe_frontend(sample_rate=8000))
        >>> [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
        ['n', 8000]
    """
    import onnx
    from onnx import TensorProto
    from onnx import helper

    if opset < MIN_OPSET:
        raise InputError(f"the audio front end needs opset {MIN_OPSET} or later, not {opset}.")
    front = audio_frontend(frontend, pcm="pcm", features="features")
    graph = helper.make_graph(
        front.nodes,
        "audio-frontend",
        [helper.make_tensor_value_info("pcm", TensorProto.INT16, ["n", front.samples])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", *front.output_shape])],
        front.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _unique_names(taken: set[str]) -> Callable[[str], str]:
    """A namer for a graph of the front end alone: ``stem``, then ``stem_1``, ``stem_2``, ..."""
    used = set(taken)

    def fresh(stem: str) -> str:
        name, index = stem, 0
        while name in used:
            index += 1
            name = f"{stem}_{index}"
        used.add(name)
        return name

    return fresh


def _number(frontend: Mapping[str, object], key: str) -> float:
    value = frontend[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"the data's front-end record has {key}={value!r}, not a number.")
    return float(value)


def _int(frontend: Mapping[str, object], key: str) -> int:
    return int(_number(frontend, key))
