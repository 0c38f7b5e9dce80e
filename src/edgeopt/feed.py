"""The concrete shapes a graph's inputs are counted and run at, and inputs made for them.

An ONNX file declares each input's element type and shape, where a dimension is a fixed size
(``dim_value``), a named symbol (``dim_param``, e.g. ``N``) or unknown
(https://onnx.ai/onnx/repo-docs/IR.html#static-tensor-shapes). Counting MACs and memory and
timing the file need every size: a fixed one is the file's (a batch of 20 stays 20: ONNX
Runtime refuses any other), a symbolic one comes from the data's samples, or, without data,
takes a stated default. Without data the inputs are made here, of the declared type and shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import InputError

__all__ = ["MAX_INPUT_BYTES", "BoundInput", "InputBinding", "bind_inputs", "generated_feeds"]

#: The most bytes the inputs of one run may take together (checked before any is allocated).
MAX_INPUT_BYTES = 1 << 30

#: ONNX element types (onnx.TensorProto) an input can be made of: floats, integers, booleans.
_FEEDABLE = {
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    4: np.uint16,
    5: np.int16,
    6: np.int32,
    7: np.int64,
    9: np.bool_,
    10: np.float16,
    11: np.float64,
    12: np.uint32,
    13: np.uint64,
}


@dataclass(frozen=True)
class BoundInput:
    """One graph input at the concrete shape it is counted and run at."""

    name: str
    shape: tuple[int, ...]
    elem_type: int

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(_FEEDABLE[self.elem_type])

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def describe(self) -> str:
        """``'x' float32 2x3x4``: the input as the profile's notes name it."""
        shape = "x".join(str(d) for d in self.shape) or "scalar"
        return f"{self.name!r} {self.dtype.name} {shape}"


@dataclass(frozen=True)
class InputBinding:
    """Every graph input bound, the batch the first one is run at, and what was assumed.

    ``batch`` is the first dimension of the first input when it has two or more (the ONNX
    convention, N x C x ...); an input of rank 0 or 1 is one sample. ``notes`` say in words
    what the file did not fix (symbolic dimensions bound to a default), for the profile.
    """

    inputs: tuple[BoundInput, ...]
    batch: int
    batch_how: str
    notes: tuple[str, ...]


def _dims(value: Any, source: str, sample_shape: tuple[int, ...] | None) -> list[Any]:
    """The declared dimensions of one input (None for a symbolic or unknown one)."""
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        if sample_shape is None:
            raise InputError(
                f"{source}: input {value.name[:80]!r} declares no shape, so its rank is unknown; "
                "give --data so that it takes the data's samples."
            )
        return [None] * (len(sample_shape) + 1)
    dims: list[Any] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            if dim.dim_value < 0:
                raise InputError(
                    f"{source}: input {value.name[:80]!r} has a negative dimension {dim.dim_value}."
                )
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param[:40] or None)
    return dims


def bind_inputs(  # noqa: C901  (one pass over the inputs: each case is a rule of the binding)
    model: Any,
    source: str | Path,
    sample_shape: tuple[int, ...] | None = None,
    *,
    default_size: int = 1,
) -> InputBinding:
    """Bind every non-constant input of ``model`` to a concrete shape.

    A fixed dimension keeps the file's size. A symbolic dimension of the first input after the
    batch takes the size of ``sample_shape`` (the data's sample, without batch) where the ranks
    match; any other symbolic dimension, the batch included, takes ``default_size``, and the
    binding's notes say so.

    Args:
        model: the ONNX model.
        source: the file, for the messages.
        sample_shape: the data's sample shape, for the first input.
        default_size: the size of a symbolic dimension nothing else gives.

    Returns:
        The :class:`InputBinding`.

    Raises:
        InputError: an input that is not a tensor, of an element type no input can be made of
            (strings), with no declared rank and no data, or whose bound size is over
            :data:`MAX_INPUT_BYTES`.

    Example:
        >>> from onnx import TensorProto, helper
        >>> x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [20, "C", 8])
        >>> y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [20, "C", 8])
        >>> model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])],
        ...                           "g", [x], [y]))
        >>> binding = bind_inputs(model, "m.onnx")
        >>> binding.inputs[0].shape, binding.batch, binding.notes
        ((20, 1, 8), 20, ("input 'x': symbolic dimension 'C' bound to 1 (no data gave it)",))
    """
    import onnx

    initializers = {init.name for init in model.graph.initializer}
    values = [v for v in model.graph.input if v.name not in initializers]
    bound: list[BoundInput] = []
    notes: list[str] = []
    batch, batch_how = 1, "the model has no input: one run"
    for position, value in enumerate(values):
        name = value.name[:80]
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            what = (kind or "value of no type").removesuffix("_type")
            raise InputError(
                f"{source}: input {name!r} is a {what}, not a tensor; edgeopt profiles models "
                "whose inputs are tensors."
            )
        elem_type = int(value.type.tensor_type.elem_type)
        if elem_type not in _FEEDABLE:
            type_name = onnx.TensorProto.DataType.Name(elem_type) if elem_type in range(27) else ""
            raise InputError(
                f"{source}: input {name!r} holds {type_name or elem_type} elements; edgeopt "
                "makes and times inputs of numbers and booleans only."
            )
        given = sample_shape if position == 0 else None
        dims = _dims(value, str(source), given)
        shape: list[int] = []
        defaulted: list[str] = []
        for axis, dim in enumerate(dims):
            if isinstance(dim, int):
                shape.append(dim)
            elif axis > 0 and given is not None and len(given) == len(dims) - 1:
                shape.append(int(given[axis - 1]))
            else:
                shape.append(default_size)
                if axis > 0 or len(dims) == 1:
                    defaulted.append(repr(dim) if dim else f"{axis} (unnamed)")
        if defaulted:
            noun = "dimension" if len(defaulted) == 1 else "dimensions"
            pronoun = "it" if len(defaulted) == 1 else "them"
            notes.append(
                f"input {name!r}: symbolic {noun} {', '.join(defaulted)} bound to "
                f"{default_size} (no data gave {pronoun})"
            )
        item = BoundInput(name=value.name, shape=tuple(shape), elem_type=elem_type)
        bound.append(item)
        if position == 0:
            batch, batch_how = _batch(item, dims[0] if dims else None, default_size)
    total = sum(item.nbytes for item in bound)
    if total > MAX_INPUT_BYTES:
        shown = ", ".join(item.describe() for item in bound[:4])
        raise InputError(
            f"{source}: the model's inputs ({shown}) would take {total / 2**30:,.1f} GiB, over "
            f"the {MAX_INPUT_BYTES / 2**30:,.0f} GiB edgeopt allocates for one run."
        )
    return InputBinding(tuple(bound), batch, batch_how, tuple(notes))


def _batch(item: BoundInput, declared: Any, default_size: int) -> tuple[int, str]:
    """The batch of the first input and how it was chosen, in words."""
    if len(item.shape) < 2:
        return 1, f"input {item.name[:80]!r} has rank {len(item.shape)}: one sample per run"
    if isinstance(declared, int):
        return item.shape[0], "fixed in the file"
    symbol = f"symbolic {declared!r}" if declared else "unnamed"
    return default_size, f"{symbol} in the file, bound to {default_size}"


def generated_feeds(inputs: Sequence[BoundInput], *, seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays for every input, of its type and bound shape, made when no data gives them.

    Floats are standard normal; 8- and 16-bit integers (raw pixels, PCM samples) are uniform
    over their range; wider integers are ones, a valid index into any non-empty axis (Gather,
    embeddings) and a valid size (Expand, Tile); booleans are False. Seeded: the same file
    always runs on the same inputs.

    Example:
        >>> feeds = generated_feeds([BoundInput("ids", (1, 4), 7)])
        >>> feeds["ids"].dtype.name, feeds["ids"].tolist()
        ('int64', [[1, 1, 1, 1]])
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for item in inputs:
        dtype = item.dtype
        if dtype.kind == "f":
            feeds[item.name] = rng.standard_normal(item.shape).astype(dtype)
        elif dtype.kind in "iu" and dtype.itemsize <= 2:
            info = np.iinfo(dtype)
            feeds[item.name] = rng.integers(
                int(info.min), int(info.max) + 1, size=item.shape
            ).astype(dtype)
        elif dtype.kind in "iu":
            feeds[item.name] = np.ones(item.shape, dtype=dtype)
        else:
            feeds[item.name] = np.zeros(item.shape, dtype=dtype)
    return feeds
