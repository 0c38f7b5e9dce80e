"""Lower data movement: views (Reshape, Flatten, ...), Concat, Split, Transpose, nearest Resize.

These operators change where values are, not what they are: a view shares its input's storage,
Concat and Split copy slices, Transpose permutes up to 4 dimensions, a nearest Resize copies
each output pixel from one input pixel. The only arithmetic is a change of scale between input
and output, which becomes a table (a view, Concat, Split, Resize) or is refused (Transpose).
Kept apart from the arithmetic (:mod:`edgeopt.export.c._elementwise`) because their one rule
is that the values out are the values in.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgeopt.export.c._graph import GraphReader
from edgeopt.export.c._program import Ref
from edgeopt.export.c._program import Step
from edgeopt.export.c._program import node_label
from edgeopt.graph import attributes

#: Operators that only relabel their input: the output shares its storage.
VIEW_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}


class MovementLowering(GraphReader):
    """Views, Concat, Split, Transpose and nearest Resize: int8 values moved, rescaled at most
    by a table."""

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
            in_inner = math.prod(x.shape[axis:])
            sizes = (outer, in_inner, out_inner, offset)
            self._slice_step(node, "edgeopt_concat", x, name, sizes, f"concat input {position}")
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
            out_inner = math.prod(self.buffers[name].shape[axis:])
            sizes = (outer, in_inner, out_inner, offset)
            self._slice_step(node, "edgeopt_split", x, name, sizes, f"split output {position}")
            offset += out_inner

    def _slice_step(
        self,
        node: Any,
        function: str,
        x: Any,
        name: str,
        sizes: tuple[int, int, int, int],
        summary: str,
    ) -> None:
        """One input of a Concat copied into its slice of the output, or one output of a Split
        copied out of its slice of the input (``outer`` rows of ``in_inner`` / ``out_inner``
        values, the slice at ``offset``), rescaled by a table where the scales differ."""
        arrays, table = self.rescale_table(x, self.buffers[name])
        keys = ("outer", "in_inner", "out_inner", "offset")
        self.add_step(
            Step(
                function,
                node_label(node),
                (x.tensor,),
                name,
                struct="edgeopt_concat_params",
                params={**dict(zip(keys, sizes, strict=True)), "table": table},
                arrays=arrays,
                summary=summary,
            )
        )

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

    def lower_Resize(self, node: Any) -> None:
        """A nearest Resize (``nn.Upsample(mode='nearest')``, ``F.interpolate``) as a gather:
        each output row and column copies one input row and column.

        Which one is what ONNX Runtime's own Resize picks (ONNX ``Resize``: the output
        coordinate mapped back by ``coordinate_transformation_mode``, PyTorch writes
        ``asymmetric``, then rounded by ``nearest_mode``, PyTorch writes ``floor``): the node
        is run once on a tensor holding each input element's index, so every mode and scale
        ONNX Runtime accepts gives its own choice, and only a result that is a copy per row and
        column (N and C kept) is lowered. The values are the input's, so the output's int8
        values are the input's, rescaled by a table when the QDQ graph changes the scale.
        """
        x = self.input(node, 0)
        mode = attributes(node).get("mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        if mode != "nearest":
            raise self.fail(
                f"node {node_label(node)} resizes with mode {mode}; only nearest resize is "
                "supported; use nn.Upsample(mode='nearest')."
            )
        name = self.quantized_output(node)
        y = self.buffers[name]
        if len(x.shape) not in (3, 4) or len(y.shape) != len(x.shape):
            raise self.fail(
                f"node {node_label(node)} resizes a {len(x.shape)}-D tensor; 3-D or 4-D."
            )
        in_h, in_w = (x.shape[2], x.shape[3]) if len(x.shape) == 4 else (1, x.shape[2])
        out_h, out_w = (y.shape[2], y.shape[3]) if len(y.shape) == 4 else (1, y.shape[2])
        index = np.arange(x.size, dtype=np.float32).reshape(x.shape)
        picked = self.evaluate(node, index).astype(np.int64)
        rows = picked.reshape(-1, out_h, out_w)[0, :, 0] // in_w
        cols = picked.reshape(-1, out_h, out_w)[0, 0, :] % in_w
        plane = np.arange(math.prod(x.shape[:2]), dtype=np.int64)[:, None, None] * (in_h * in_w)
        expected = plane + rows[None, :, None] * in_w + cols[None, None, :]
        if picked.shape != tuple(y.shape) or not np.array_equal(picked.ravel(), expected.ravel()):
            raise self.fail(
                f"node {node_label(node)} does not copy whole rows and columns of each channel; "
                "only nearest resize of H and W is supported; use nn.Upsample(mode='nearest')."
            )
        index_step = len(self.steps)
        arrays = (
            self.array(index_step, "rows", "int32_t", rows),
            self.array(index_step, "cols", "int32_t", cols),
        )
        rescale, table = self.rescale_table(x, y)
        params = {
            "channels": math.prod(x.shape[:2]),
            "in_height": in_h,
            "in_width": in_w,
            "out_height": out_h,
            "out_width": out_w,
            "rows": Ref(arrays[0].name),
            "cols": Ref(arrays[1].name),
            "table": table,
        }
        self.add_step(
            Step(
                "edgeopt_resize_nearest",
                node_label(node),
                (x.tensor,),
                name,
                struct="edgeopt_resize_params",
                params=params,
                arrays=arrays + rescale,
                summary=f"nearest resize {in_h}x{in_w} -> {out_h}x{out_w}",
            )
        )
