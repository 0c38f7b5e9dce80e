"""Write data movement: RESHAPE (with TRANSPOSEs around it where the NHWC storage order
differs from ONNX's), TRANSPOSE, CONCATENATION, SPLIT_V, PAD."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt.export._tflite._base import TFLiteGraph
from edgeopt.export._tflite._base import is_nchw_order
from edgeopt.export._tflite._base import nhwc
from edgeopt.export.c._program import node_label
from edgeopt.graph import attributes

__all__ = ["MovementConversion"]


class MovementConversion(TFLiteGraph):
    """Views, Transpose, Concat, Split and Pad: values moved, never changed (a QUANTIZE
    where the QDQ file changes the scale on the way)."""

    def convert_view(self, node: Any) -> None:
        """Reshape, Flatten, Squeeze, ...: a RESHAPE of the NCHW element order."""
        x = self.source_of(node, 0)
        y = self.plain_result(node)
        in_shape, out_shape = self.shapes[x], self.shapes[y]
        label = node.name or node.output[0]
        if in_shape == out_shape and self.quantization_of(x) == self.quantization_of(y):
            # no step: later readers take x itself
            self.by_name = {k: (x if v == y else v) for k, v in self.by_name.items()}
            self.tensors[y] = None
            return
        source = x
        if not is_nchw_order(in_shape):  # NHWC storage -> the ONNX (NCHW) element order
            source = self.transpose(x, [0, 3, 1, 2], in_shape, f"{label}_nchw")
            self.tensors[source].shape = np.array(in_shape, dtype=np.int32)
        stored_out = nhwc(out_shape) if is_nchw_order(out_shape) else tuple(out_shape)
        reshaped = y
        if not is_nchw_order(out_shape) or self.quantization_of(x) != self.quantization_of(y):
            reshaped = self.like(x, f"{label}_reshaped")
            self.shapes[reshaped] = out_shape
        self.tensors[reshaped].shape = np.array(stored_out, dtype=np.int32)
        shape = self.int32s(f"{label}_shape", list(stored_out))
        options = self.options("ReshapeOptions", newShape=list(stored_out))
        self.add_op(self.s.BuiltinOperator.RESHAPE, [source, shape], [reshaped], *options)
        if not is_nchw_order(out_shape):  # a 4-D result: back to NHWC
            moved = self.transpose(reshaped, [0, 2, 3, 1], out_shape, f"{label}_nhwc")
            reshaped = moved
        if reshaped != y:
            if self.quantization_of(reshaped) == self.quantization_of(y):
                self.by_name = {k: (reshaped if v == y else v) for k, v in self.by_name.items()}
                self.tensors[y] = None
            else:
                self.requantize(reshaped, y)

    def convert_Transpose(self, node: Any) -> None:
        """A TRANSPOSE of the stored axes: the ONNX permutation composed with the NHWC storage
        of a 4-D input and of a 4-D output (ShuffleNet's channel shuffle is a 5-D one)."""
        x = self.source_of(node, 0)
        y = self.plain_result(node)
        in_shape = self.shapes[x]
        rank = len(in_shape)
        perm = [int(p) % rank for p in attributes(node).get("perm", range(rank)[::-1])]
        if rank > 5:
            raise self.fail(
                f"node {node_label(node)} transposes {rank} dimensions; TFLite Micro's "
                "TRANSPOSE takes up to 5."
            )
        if self.is_quantized and self.quantization_of(x) != self.quantization_of(y):
            raise self.fail(f"node {node_label(node)} changes the scale while transposing.")
        # stored axis i of a 4-D tensor holds ONNX axis [0, 2, 3, 1][i] (NHWC)
        stored_in = [0, 2, 3, 1] if rank == 4 else list(range(rank))
        stored_out = [0, 2, 3, 1] if len(self.shapes[y]) == 4 else list(range(rank))
        onnx_to_stored_in = [stored_in.index(axis) for axis in range(rank)]
        stored_perm = [onnx_to_stored_in[perm[axis]] for axis in stored_out]
        self.add_op(
            self.s.BuiltinOperator.TRANSPOSE,
            [x, self.int32s(f"{node.name or node.output[0]}_perm", stored_perm)],
            [y],
            *self.options("TransposeOptions"),
        )

    def convert_Split(self, node: Any) -> None:
        """SPLIT_V along the axis (NHWC's for a 4-D tensor); an output quantized with another
        scale than the input's gets a QUANTIZE after it (SPLIT_V copies bytes)."""
        x = self.source_of(node, 0)
        shape = self.shapes[x]
        rank = len(shape)
        attrs = attributes(node)
        axis = int(attrs.get("axis", 0)) % rank
        sizes = attrs.get("split")
        if sizes is None and len(node.input) > 1 and node.input[1]:
            sizes = [int(v) for v in np.asarray(self.value(node.input[1], node)).ravel()]
        if sizes is None:
            count = len(node.output)
            sizes = [-(-shape[axis] // count)] * (count - 1)
            sizes.append(shape[axis] - sum(sizes))
        stored_axis = {0: 0, 1: 3, 2: 1, 3: 2}[axis] if rank == 4 else axis
        outputs = []
        for position, out in enumerate(node.output):
            consumers = self.consumers(out)
            out_shape = tuple(d if i != axis else sizes[position] for i, d in enumerate(shape))
            if not self.is_quantized:
                self.by_name[out] = self.activation(out, out_shape, 1.0, 0)
                outputs.append(self.by_name[out])
                continue
            quantizers = [c for c in consumers if c.op_type == "QuantizeLinear"]
            if len(quantizers) != len(consumers) or out in self.graph.outputs:
                raise self.fail(f"node {node_label(node)} writes {out!r} in float.")
            piece = self.like(x, f"{node.name or out}_{position}")
            self.shapes[piece] = out_shape
            self.tensors[piece].shape = np.array(nhwc(out_shape), dtype=np.int32)
            outputs.append(piece)
            if not quantizers:
                continue
            name = self.new_buffer(quantizers[0])
            for extra in quantizers[1:]:
                self.views[extra.output[0]] = name
            target = self.tensor_of(name)
            if self.quantization_of(target) == self.quantization_of(piece):
                self.tensors[target] = None
                self.by_name[name] = piece
            else:
                self.pending.append((piece, target))
        self.add_op(
            self.s.BuiltinOperator.SPLIT_V,
            [
                x,
                self.int32s(f"{node.name or node.output[0]}_sizes", list(sizes)),
                self.constant(
                    f"{node.name or node.output[0]}_axis",
                    np.array(stored_axis, dtype=np.int32),
                    self.s.TensorType.INT32,
                ),
            ],
            outputs,
            *self.options("SplitVOptions", numSplits=len(outputs)),
        )
        for piece, target in self.pending:
            self.requantize(piece, target)
        self.pending = []

    def convert_Concat(self, node: Any) -> None:
        parts = [self.source_of(node, i) for i in range(len(node.input)) if node.input[i]]
        y = self.plain_result(node)
        rank = len(self.shapes[y])
        axis = int(attributes(node).get("axis", 1)) % rank
        if rank == 4:
            axis = {0: 0, 1: 3, 2: 1, 3: 2}[axis]
        # TFLite Micro's int8 CONCATENATION copies bytes: every input in the output's scale
        wanted = self.quantization_of(y)
        moved = []
        for position, part in enumerate(parts):
            if self.is_quantized and self.quantization_of(part) != wanted:
                rescaled = self.like(part, f"{node.name or y}_in{position}", *wanted)
                self.requantize(part, rescaled)
                part = rescaled
            moved.append(part)
        options = self.options("ConcatenationOptions", axis=axis)
        self.add_op(self.s.BuiltinOperator.CONCATENATION, moved, [y], *options)

    def convert_Pad(self, node: Any) -> None:
        x = self.source_of(node, 0)
        attrs = attributes(node)
        mode = attrs.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        pads = attrs.get("pads")
        if pads is None and len(node.input) > 1:
            pads = [int(v) for v in np.asarray(self.value(node.input[1], node)).ravel()]
        value = 0.0
        if len(node.input) > 2 and node.input[2]:
            value = float(np.asarray(self.value(node.input[2], node)).ravel()[0])
        rank = len(self.shapes[x])
        if mode != "constant" or value != 0.0 or pads is None or len(pads) != 2 * rank:
            raise self.fail(
                f"node {node_label(node)} pads in mode {mode} with {value}; the TFLite exporter "
                "writes constant zero padding (PAD)."
            )
        if any(int(p) < 0 for p in pads):
            raise self.fail(f"node {node_label(node)} crops (negative pads); not supported.")
        pairs = [[int(pads[i]), int(pads[i + rank])] for i in range(rank)]
        if rank == 4:
            pairs = [pairs[0], pairs[2], pairs[3], pairs[1]]
        y = self.plain_result(node)
        if self.is_quantized and self.quantization_of(x) != self.quantization_of(y):
            raise self.fail(f"node {node_label(node)} changes the scale while padding.")
        paddings = self.constant(
            f"{node.name or node.output[0]}_paddings",
            np.array(pairs, dtype=np.int32),
            self.s.TensorType.INT32,
        )
        self.add_op(self.s.BuiltinOperator.PAD, [x, paddings], [y])
