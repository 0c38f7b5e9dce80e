"""The driver of the ONNX -> TFLite walk: quantization boundaries, each node to its handler,
the graph's input and output, and the packed ``ModelT``."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt.export._tflite._base import TFLITE_OPS
from edgeopt.export._tflite._elementwise import ElementwiseConversion
from edgeopt.export._tflite._layers import LayerConversion
from edgeopt.export._tflite._movement import MovementConversion
from edgeopt.export.c._movement import VIEW_OPS
from edgeopt.export.c._program import node_label
from edgeopt.graph import attributes

__all__ = ["Converter"]


class Converter(LayerConversion, ElementwiseConversion, MovementConversion):
    """One walk over the ONNX graph, each node to the ``convert_<op>`` of the mixin that owns
    it; ``run`` returns the TFLite schema's ``ModelT``."""

    # -- quantization boundaries -----------------------------------------------------------------

    def convert_QuantizeLinear(self, node: Any) -> None:
        source = node.input[0]
        if node.output[0] in self.buffers:
            return  # written by its layer
        if source in self.graph.inputs:
            if self.model_input is not None:
                raise self.fail(
                    "the graph input is quantized twice; the TFLite exporter needs one."
                )
            self.model_input = self.tensor_of(self.new_buffer(node))
            return
        if source in self.dequantized:  # a change of scale: DequantizeLinear -> QuantizeLinear
            before = self.tensor_of(self.dequantized[source])
            after = self.tensor_of(self.new_buffer(node))
            if self.quantization_of(before) == self.quantization_of(after):
                self.by_name[node.output[0]] = before
                self.tensors[after] = None
            else:
                self.requantize(before, after)
            return
        producer = self.graph.producers.get(source)
        who = node_label(producer) if producer is not None else repr(source)
        raise self.fail(f"node {node_label(node)} quantizes the float output of {who}.")

    def convert_DequantizeLinear(self, node: Any) -> None:
        source = node.input[0]
        if source not in self.buffers:
            raise self.fail(
                f"node {node_label(node)} dequantizes {source!r}, which is no activation."
            )
        self.dequantized[node.output[0]] = source

    # -- the walk ------------------------------------------------------------------------------

    def check_types(self) -> None:
        """int8 / uint8 activations only: TFLite Micro's int16 kernels (16x8) are another path."""
        for node in self.nodes:
            if node.op_type != "QuantizeLinear" or self.is_constant(node.input[0]):
                continue
            if len(node.input) > 2 and node.input[2]:
                dtype = np.asarray(self.value(node.input[2], node)).dtype
            else:
                output_dtype = attributes(node).get("output_dtype", 0)
                dtype = np.dtype(np.int8 if output_dtype == 3 else np.uint8)
                if output_dtype not in (0, 2, 3):
                    dtype = np.dtype(f"V{output_dtype}")  # an ONNX type number, named below
            if dtype not in (np.int8, np.uint8):
                raise self.fail(
                    f"node {node_label(node)} quantizes activations to {dtype}; the TFLite "
                    "exporter writes int8 models (int8 or uint8 QDQ, as edgeopt quantize writes)."
                )

    def run(self) -> Any:
        if len(self.graph.inputs) != 1 or len(self.graph.outputs) != 1:
            raise self.fail(
                f"the graph has {len(self.graph.inputs)} inputs and {len(self.graph.outputs)} "
                "outputs; the TFLite exporter writes one of each."
            )
        self.logits: int | None = None
        if self.is_quantized:
            self.check_types()
        else:
            name = self.graph.inputs[0]
            self.model_input = self.float_result(name)
        for position, node in enumerate(self.nodes):
            if position in self.fused or all(self.is_constant(o) for o in node.output if o):
                continue
            if node.op_type in VIEW_OPS:
                handler = self.convert_view
            else:
                handler = getattr(self, f"convert_{node.op_type}", None)
            if handler is None or (
                not self.is_quantized and node.op_type.endswith("QuantizeLinear")
            ):
                raise self.fail(
                    f"node {node.name or node.output[0]!r} ({node.op_type}): unsupported "
                    f"operator; the TFLite exporter writes {', '.join(sorted(TFLITE_OPS))}."
                )
            handler(node)
        return self.finish()

    def finish(self) -> Any:
        if self.model_input is None:
            raise self.fail(
                "the graph input is not quantized by a QuantizeLinear; the TFLite exporter needs "
                "a float input followed by QuantizeLinear (edgeopt quantize writes one)."
            )
        output = self.graph.outputs[0]
        if self.is_quantized:
            if (
                self.logits is not None
                and self.graph.producers.get(output) is not None
                and (self.graph.producers[output].op_type in ("Gemm", "MatMul", "Softmax"))
            ):
                self.model_output = self.logits
            elif output in self.dequantized:
                self.model_output = self.tensor_of(self.dequantized[output])
            elif output in self.buffers:
                self.model_output = self.tensor_of(output)
            else:
                producer = self.graph.producers.get(output)
                who = node_label(producer) if producer is not None else repr(output)
                raise self.fail(f"the graph output comes from {who}, which is not converted.")
        else:
            self.model_output = self.by_name[output]
        return self.pack()

    def pack(self) -> Any:
        """The ModelT, with the tensors left unused (aliased away) dropped and renumbered."""
        kept = [i for i, t in enumerate(self.tensors) if t is not None]
        renumber = {old: new for new, old in enumerate(kept)}
        for op in self.operators:
            op.inputs = np.array([renumber[int(i)] for i in op.inputs], dtype=np.int32)
            op.outputs = np.array([renumber[int(i)] for i in op.outputs], dtype=np.int32)
        subgraph = self.s.SubGraphT()
        subgraph.tensors = [self.tensors[i] for i in kept]
        assert self.model_input is not None and self.model_output is not None
        subgraph.inputs = np.array([renumber[self.model_input]], dtype=np.int32)
        subgraph.outputs = np.array([renumber[self.model_output]], dtype=np.int32)
        subgraph.operators = self.operators
        subgraph.name = "main"
        model = self.s.ModelT()
        model.version = 3
        model.description = "edgeopt"
        model.subgraphs = [subgraph]
        codes = sorted(self.opcodes, key=self.opcodes.__getitem__)
        model.operatorCodes = []
        for code in codes:
            opcode = self.s.OperatorCodeT()
            opcode.builtinCode = code
            opcode.deprecatedBuiltinCode = min(code, 127)  # schema.fbs: 127 = see builtin_code
            opcode.version = 1
            model.operatorCodes.append(opcode)
        model.buffers = self.tflite_buffers
        return model
