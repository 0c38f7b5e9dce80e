"""Lower the boundaries of the int8 buffers: QuantizeLinear, DequantizeLinear, the raw input.

In a QDQ graph these nodes compute nothing an int8 runtime keeps: they say where an int8 buffer
starts and with which scale. A DequantizeLinear becomes no step (the next kernel reads its int8
buffer and scale directly); a QuantizeLinear is the graph input's conversion, nothing (the layer
before it already wrote the buffer), a change of scale (a table) or the quantization of a float
result (after Softmax). One module decides where int8 begins and ends, so the kernels never
have to. A folded model's raw 8-bit input (:mod:`edgeopt.export.c._raw`) ends at the first
QuantizeLinear, so it is lowered here too.
"""

from __future__ import annotations

from typing import Any

from edgeopt.export.c._graph import GraphReader
from edgeopt.export.c._program import INPUT
from edgeopt.export.c._program import UINT8
from edgeopt.export.c._program import Ref
from edgeopt.export.c._program import Step
from edgeopt.export.c._program import f32
from edgeopt.export.c._program import node_label
from edgeopt.export.c._raw import find_raw_chain
from edgeopt.export.c._raw import raw_tables
from edgeopt.export.c._raw import table_size


class QuantizeLowering(GraphReader):
    """The graph input (float or raw 8-bit), QuantizeLinear and DequantizeLinear."""

    def lower_raw_input(self) -> None:
        """Map a folded model's raw 8-bit input to its first int8 buffer through tables."""
        chain = find_raw_chain(
            self.graph.model,
            source=self.source,
            shapes=self.graph.tensors,
            constants=self.values,
            consumers=self.consumers,
        )
        if chain is None:
            return
        quantize = chain.quantize
        name = self.new_buffer(quantize)
        buffer = self.buffers[name]
        if buffer.shape != chain.shape:
            raise self.fail(
                f"node {node_label(quantize)} quantizes shape {buffer.shape}, not the raw input's "
                f"{chain.shape}."
            )
        onnx_values = raw_tables(chain, self.values, self.opset)
        stored = onnx_values - (128 if buffer.onnx_type == UINT8 else 0)
        table = self.array(len(self.steps), "table", "int8_t", stored)
        self.input_buffer = buffer
        self.raw_input = chain.dtype
        self.fused.update(self.index[id(node)] for node in chain.nodes)
        per = "per channel " if chain.channels > 1 else ""
        self.add_step(
            Step(
                "edgeopt_lookup_u8" if chain.dtype == "uint8" else "edgeopt_lookup_s8",
                node_label(quantize),
                (INPUT,),
                name,
                leading=(Ref(table.name),),
                args=(chain.channels, table_size(chain)),
                arrays=(table,),
                summary=f"raw {chain.dtype} input, 256-entry table {per}({len(chain.nodes)} nodes)",
            )
        )

    def lower_QuantizeLinear(self, node: Any) -> None:
        source = node.input[0]
        if node.output[0] in self.buffers:
            return  # written by its layer
        if source in self.graph.inputs:
            if self.input_buffer is not None:
                raise self.fail("the graph input is quantized twice; the C exporter needs one.")
            name = self.new_buffer(node)
            buffer = self.buffers[name]
            self.input_buffer = buffer
            function = "edgeopt_from_u8" if buffer.onnx_type == UINT8 else "edgeopt_copy"
            self.add_step(
                Step(function, "input", (INPUT,), name, args=(buffer.size,), summary="input")
            )
            return
        if source in self.dequantized:  # a change of scale: DequantizeLinear -> QuantizeLinear
            before = self.buffers[self.dequantized[source]]
            self.lower_table(node, before, self.new_buffer(node), None)
            return
        if source in self.floats:
            before = self.buffers[self.floats[source]]
            name = self.new_buffer(node)
            after = self.buffers[name]
            if after.onnx_type == UINT8:
                raise self.fail(
                    f"node {node_label(node)} quantizes a float result to uint8 inside the graph; "
                    "the C exporter supports int8 there."
                )
            self.add_step(
                Step(
                    "edgeopt_quantize_s8",
                    node_label(node),
                    (self.floats[source],),
                    name,
                    args=(before.size, f32(after.scale), after.zero_point),
                    summary="quantize",
                )
            )
            return
        producer = self.graph.producers.get(source)
        who = node_label(producer) if producer is not None else repr(source)
        raise self.fail(f"node {node_label(node)} quantizes the float output of {who}.")

    def lower_DequantizeLinear(self, node: Any) -> None:
        source = node.input[0]
        if source not in self.buffers:
            raise self.fail(
                f"node {node_label(node)} dequantizes {source!r}, which is no activation."
            )
        self.dequantized[node.output[0]] = source
