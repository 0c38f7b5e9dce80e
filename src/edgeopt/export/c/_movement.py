"""Lower data movement: views (Reshape, Flatten, Squeeze, ...), Concat, Split, Transpose.

These operators change where values are, not what they are: a view shares its input's storage,
Concat and Split copy slices, Transpose permutes up to 4 dimensions. The only arithmetic is a
change of scale between input and output, which becomes a table (a view, Concat, Split) or is
refused (Transpose). Kept apart from the arithmetic (:mod:`edgeopt.export.c._elementwise`)
because their one rule is that the values out are the values in.
"""

from __future__ import annotations

import math
from typing import Any

from edgeopt.export.c._graph import GraphReader
from edgeopt.export.c._program import Step
from edgeopt.export.c._program import node_label
from edgeopt.graph import attributes

#: Operators that only relabel their input: the output shares its storage.
VIEW_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}


class MovementLowering(GraphReader):
    """Views, Concat, Split and Transpose: int8 values moved, rescaled at most by a table."""

    def lower_view(self, node: Any) -> None:
        before = self.input(node, 0)
        name, _, _ = self.output(node)
        if name is None:
            raise self.fail(f"node {node_label(node)} writes the graph output in float.")
        self.lower_table(node, before, name, None)

    def lower_Concat(self, node: Any) -> None:
        parts = [self.input(node, i) for i in range(len(node.input)) if node.input[i]]
        name = self.quantized_output(node)
        y = self.buffers[name]
        axis = int(attributes(node).get("axis", 1)) % len(y.shape)
        outer = math.prod(y.shape[:axis])
        out_inner = math.prod(y.shape[axis:])
        offset = 0
        for position, x in enumerate(parts):
            arrays, table = self.rescale_table(x, y)
            in_inner = math.prod(x.shape[axis:])
            params = {
                "outer": outer,
                "in_inner": in_inner,
                "out_inner": out_inner,
                "offset": offset,
                "table": table,
            }
            self.add_step(
                Step(
                    "edgeopt_concat",
                    node_label(node),
                    (x.tensor,),
                    name,
                    struct="edgeopt_concat_params",
                    params=params,
                    arrays=arrays,
                    summary=f"concat input {position}",
                )
            )
            offset += in_inner

    def lower_Split(self, node: Any) -> None:
        x = self.input(node, 0)
        axis = int(attributes(node).get("axis", 0)) % len(x.shape)
        outer = math.prod(x.shape[:axis])
        in_inner = math.prod(x.shape[axis:])
        offset = 0
        for position, out in enumerate(node.output):
            consumers = self.consumers(out)
            if not out or not consumers:
                continue
            quantizers = [c for c in consumers if c.op_type == "QuantizeLinear"]
            if len(quantizers) != len(consumers) or out in self.graph.outputs:
                raise self.fail(
                    f"node {node_label(node)} writes {out!r} in float; the C exporter needs each "
                    "output of a Split quantized."
                )
            name = self.new_buffer(quantizers[0])
            for extra in quantizers[1:]:
                if self.qparams(extra) != self.qparams(quantizers[0]):
                    raise self.fail(f"tensor {out!r} is quantized twice with different scales.")
                self.views[extra.output[0]] = name
                self.buffers[extra.output[0]] = self.buffers[name]
            y = self.buffers[name]
            arrays, table = self.rescale_table(x, y)
            out_inner = math.prod(y.shape[axis:])
            params = {
                "outer": outer,
                "in_inner": in_inner,
                "out_inner": out_inner,
                "offset": offset,
                "table": table,
            }
            self.add_step(
                Step(
                    "edgeopt_split",
                    node_label(node),
                    (x.tensor,),
                    name,
                    struct="edgeopt_concat_params",
                    params=params,
                    arrays=arrays,
                    summary=f"split output {position}",
                )
            )
            offset += out_inner

    def lower_Transpose(self, node: Any) -> None:
        x = self.input(node, 0)
        name = self.quantized_output(node)
        y = self.buffers[name]
        rank = len(x.shape)
        perm = list(attributes(node).get("perm", list(range(rank))[::-1]))
        if (x.scale, x.zero_point) != (y.scale, y.zero_point):
            raise self.fail(f"node {node_label(node)} changes the scale while transposing.")
        # axes of size 1 do not change the memory order: drop them, renumber the rest
        kept = [axis for axis in range(rank) if x.shape[axis] > 1]
        shape = [x.shape[axis] for axis in kept]
        order = [kept.index(axis) for axis in perm if axis in kept]
        if len(shape) > 4:
            raise self.fail(
                f"node {node_label(node)} transposes {len(shape)} dimensions larger than 1; "
                f"up to 4."
            )
        pad = 4 - len(shape)
        params = {
            "in_shape": [1] * pad + shape,
            "perm": list(range(pad)) + [p + pad for p in order],
        }
        self.add_step(
            Step(
                "edgeopt_transpose",
                node_label(node),
                (x.tensor,),
                name,
                struct="edgeopt_transpose_params",
                params=params,
                summary=f"transpose {perm}",
            )
        )
