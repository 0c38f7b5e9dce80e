"""Lower the compute layers: convolutions, fully connected layers and pooling.

Conv, ConvTranspose, Gemm and MatMul are the layers with weights: int8 x int8 products summed
in int32, a bias in the accumulator's scale, requantized per output channel. Pooling has no
weights but walks the same windows (kernel, strides, pads, ``auto_pad``), so it shares their
geometry here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt.export.c._graph import GraphReader
from edgeopt.export.c._program import OUTPUT
from edgeopt.export.c._program import UINT8
from edgeopt.export.c._program import Buffer
from edgeopt.export.c._program import Ref
from edgeopt.export.c._program import Step
from edgeopt.export.c._program import f32
from edgeopt.export.c._program import fixed_point
from edgeopt.export.c._program import node_label
from edgeopt.graph import attributes


class LayerLowering(GraphReader):
    """Conv (general, depthwise, pointwise), ConvTranspose, Gemm / MatMul, max / average /
    global pooling."""

    def lower_Conv(self, node: Any) -> None:
        x = self.input(node, 0)
        q, w_scale = self.weights(node, 1)
        attrs = attributes(node)
        if len(x.shape) not in (3, 4) or q.ndim != len(x.shape):
            raise self.fail(
                f"node {node_label(node)} is a {len(x.shape) - 2}-D convolution; 1-D and 2-D only."
            )
        name, low, high = self.output(node)
        if name is None:
            raise self.fail(f"node {node_label(node)} writes the graph output in float.")
        y = self.buffers[name]
        two_d = len(x.shape) == 4
        in_c, in_h, in_w = (
            (x.shape[1], x.shape[2], x.shape[3]) if two_d else (x.shape[1], 1, x.shape[2])
        )
        out_c, out_h, out_w = (
            (y.shape[1], y.shape[2], y.shape[3]) if two_d else (y.shape[1], 1, y.shape[2])
        )
        kernel = list(attrs.get("kernel_shape", q.shape[2:]))
        strides = list(attrs.get("strides", [1] * len(kernel)))
        dilations = list(attrs.get("dilations", [1] * len(kernel)))
        pads = self.pads(node, attrs, kernel, strides, dilations, x.shape[2:], y.shape[2:])
        if not two_d:
            kernel, strides, dilations = [1, *kernel], [1, *strides], [1, *dilations]
            pads = [0, pads[0], 0, pads[1]]
        groups = int(attrs.get("group", 1))
        bias, multipliers = self._requantization(node, x, y, w_scale, out_c)
        weights = q.reshape(out_c, -1)
        is_pointwise = groups == 1 and kernel == [1, 1] and strides == [1, 1] and not any(pads)
        if is_pointwise:
            bias = bias - x.zero_point * weights.sum(axis=1)
            function, kind = "edgeopt_pointwise_conv2d", "pointwise"
        elif groups == in_c and groups > 1 and q.shape[1] == 1:
            function, kind = "edgeopt_depthwise_conv2d", "depthwise"
        else:
            function, kind = "edgeopt_conv2d", "conv"
        arrays = self._window_arrays(weights, bias, multipliers)
        params = self._window_params(
            arrays,
            (x, y, low, high),
            (in_c, in_h, in_w, out_c, out_h, out_w),
            (kernel, strides, pads, dilations, groups),
        )
        shape = "x".join(map(str, kernel))
        self.add_step(
            Step(
                function,
                node_label(node),
                (x.tensor,),
                name,
                struct="edgeopt_conv_params",
                params=params,
                arrays=arrays,
                summary=f"{kind} {shape}/{strides[-1]}, {in_c}x{in_h}x{in_w} -> "
                f"{out_c}x{out_h}x{out_w}",
            )
        )

    def lower_ConvTranspose(self, node: Any) -> None:
        """A transposed convolution (ONNX ``ConvTranspose``, ``nn.ConvTranspose1d/2d``), group 1.

        ONNX Runtime's CPU provider has no int8 ConvTranspose: it dequantizes, computes in
        float and quantizes (a float sum whose rounding no device reproduces). What an int8
        runtime computes, and what the exact reference (:mod:`edgeopt.measure.int8`) makes ONNX
        Runtime compute, is the integer sum ``bias + sum (x - zx) * w`` over the input pixels
        that reach each output pixel (``oy = iy * stride - pad_top + ky``, ONNX ConvTranspose),
        requantized per output channel as a convolution is: the same sum as a convolution with
        the flipped kernel over the input with ``stride - 1`` zero-point pixels between its
        pixels, where the inserted pixels add nothing.
        """
        x = self.input(node, 0)
        q, w_scale = self.weights(node, 1)
        attrs = attributes(node)
        rank = len(x.shape) - 2
        auto = attrs.get("auto_pad", b"NOTSET")
        if (
            rank not in (1, 2)
            or q.ndim != len(x.shape)
            or int(attrs.get("group", 1)) != 1
            or any(d != 1 for d in attrs.get("dilations", [1] * rank))
            or (auto.decode() if isinstance(auto, bytes) else str(auto)) not in ("NOTSET", "")
            or "output_shape" in attrs
        ):
            raise self.fail(
                f"node {node_label(node)} is a {rank}-D transposed convolution with groups, "
                "dilations, auto_pad or output_shape; the C exporter supports 1-D and 2-D "
                "ConvTranspose with group 1, no dilation and explicit padding "
                "(nn.ConvTranspose2d's defaults)."
            )
        name, low, high = self.output(node)
        if name is None:
            raise self.fail(f"node {node_label(node)} writes the graph output in float.")
        y = self.buffers[name]
        in_c, in_h, in_w = (x.shape[1], *x.shape[2:]) if rank == 2 else (x.shape[1], 1, x.shape[2])
        out_c, out_h, out_w = (
            (y.shape[1], *y.shape[2:]) if rank == 2 else (y.shape[1], 1, y.shape[2])
        )
        kernel = list(q.shape[2:])
        strides = list(attrs.get("strides", [1] * rank))
        pads = list(attrs.get("pads", [0] * 2 * rank))
        if rank == 1:
            kernel, strides, pads = [1, *kernel], [1, *strides], [0, pads[0]]
        bias, multipliers = self._requantization(node, x, y, w_scale, out_c)
        arrays = self._window_arrays(q.reshape(in_c, out_c, -1), bias, multipliers)
        params = self._window_params(
            arrays,
            (x, y, low, high),
            (in_c, in_h, in_w, out_c, out_h, out_w),
            (kernel, strides, pads, [1, 1], 1),
        )
        self.add_step(
            Step(
                "edgeopt_conv_transpose2d",
                node_label(node),
                (x.tensor,),
                name,
                struct="edgeopt_conv_params",
                params=params,
                arrays=arrays,
                summary=f"transposed conv {kernel[0]}x{kernel[1]}/{strides[-1]}, "
                f"{in_c}x{in_h}x{in_w} -> {out_c}x{out_h}x{out_w}",
            )
        )

    def _requantization(
        self, node: Any, x: Buffer, y: Buffer, w_scale: np.ndarray, out_c: int
    ) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """The int32 bias in the accumulator's scale and each output channel's fixed-point
        multiplier and shift, ``x_scale * w_scale[c] / y_scale`` (float32, as the reference)."""
        channel_scale = np.broadcast_to(w_scale.ravel(), (out_c,))
        acc_scale = np.array([f32(x.scale) * s for s in channel_scale], dtype=np.float32)
        multipliers = [fixed_point(float(a / f32(y.scale))) for a in acc_scale]
        return self.bias(node, 2, acc_scale, out_c), multipliers

    def _window_arrays(
        self, weights: np.ndarray, bias: np.ndarray, multipliers: list[tuple[int, int]]
    ) -> tuple[Any, ...]:
        """The four constant arrays of a (transposed) convolution step."""
        index = len(self.steps)
        return (
            self.array(index, "weights", "int8_t", weights),
            self.array(index, "bias", "int32_t", bias),
            self.array(index, "multiplier", "int32_t", [m for m, _ in multipliers]),
            self.array(index, "shift", "int32_t", [s for _, s in multipliers]),
        )

    @staticmethod
    def _window_params(
        arrays: tuple[Any, ...],
        quant: tuple[Buffer, Buffer, int, int],
        sizes: tuple[int, int, int, int, int, int],
        window: tuple[list[int], list[int], list[int], list[int], int],
    ) -> dict[str, Any]:
        """``edgeopt_conv_params`` of a (transposed) convolution: the input and output buffers
        with the activation range, C x H x W in and out, and kernel, strides, begin pads,
        dilations and groups."""
        x, y, low, high = quant
        kernel, strides, pads, dilations, groups = window
        names = ("in_channels", "in_height", "in_width", "out_channels", "out_height", "out_width")
        return {
            **dict(zip(names, sizes, strict=True)),
            "kernel_height": kernel[0],
            "kernel_width": kernel[1],
            "stride_height": strides[0],
            "stride_width": strides[1],
            "pad_top": pads[0],
            "pad_left": pads[1],
            "dilation_height": dilations[0],
            "dilation_width": dilations[1],
            "groups": groups,
            "in_zero_point": x.zero_point,
            "out_zero_point": y.zero_point,
            "act_min": low,
            "act_max": high,
            "weights": Ref(arrays[0].name),
            "bias": Ref(arrays[1].name),
            "multiplier": Ref(arrays[2].name),
            "shift": Ref(arrays[3].name),
        }

    def pads(
        self,
        node: Any,
        attrs: dict[str, Any],
        kernel: list[int],
        strides: list[int],
        dilations: list[int],
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
    ) -> list[int]:
        """Begin pads per spatial axis (and the end pads after them), from ``auto_pad`` too."""
        auto = attrs.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else str(auto)
        rank = len(kernel)
        if auto in ("NOTSET", ""):
            pads = list(attrs.get("pads", [0] * 2 * rank))
            return pads
        if auto == "VALID":
            return [0] * 2 * rank
        begins, ends = [], []
        for axis in range(rank):
            span = (kernel[axis] - 1) * dilations[axis] + 1
            total = max((out_shape[axis] - 1) * strides[axis] + span - in_shape[axis], 0)
            small = total // 2
            begins.append(small if auto == "SAME_UPPER" else total - small)
            ends.append(total - begins[-1])
        return begins + ends

    def fully_connected(
        self, node: Any, x: Buffer, weights: np.ndarray, w_scale: np.ndarray, bias_position: int
    ) -> None:
        out_features, in_features = weights.shape
        if x.size != in_features:
            raise self.fail(
                f"node {node_label(node)} multiplies {x.size} values by a {in_features}-input "
                "weight; the C exporter supports a batch of one row: apply the layer to a "
                "flattened vector, or to each token as a 1x1 Conv1d over a (channels, tokens) "
                "tensor."
            )
        channel_scale = np.broadcast_to(w_scale.ravel(), (out_features,))
        acc_scale = np.array([f32(x.scale) * s for s in channel_scale], dtype=np.float32)
        bias = self.bias(node, bias_position, acc_scale, out_features)
        bias = bias - x.zero_point * weights.sum(axis=1)
        name, low, high = self.output(node)
        index = len(self.steps)
        arrays = [
            self.array(index, "weights", "int8_t", weights),
            self.array(index, "bias", "int32_t", bias),
        ]
        params: dict[str, Any] = {
            "in_features": in_features,
            "out_features": out_features,
            "weights": Ref(arrays[0].name),
            "bias": Ref(arrays[1].name),
        }
        output: str | Ref
        if name is None:  # float logits, as ONNX Runtime's QGemm writes them
            arrays.append(self.array(index, "scale", "float", acc_scale))
            params.update(
                out_zero_point=0, act_min=-128, act_max=127, out_scale=Ref(arrays[2].name)
            )
            function, output = "edgeopt_fully_connected_f32", OUTPUT
            info = self.graph.tensors[node.output[0]]
            self.float_output = Buffer(node.output[0], tuple(info.shape), dtype="float32")
        else:
            y = self.buffers[name]
            multipliers = [fixed_point(float(a / f32(y.scale))) for a in acc_scale]
            arrays.append(self.array(index, "multiplier", "int32_t", [m for m, _ in multipliers]))
            arrays.append(self.array(index, "shift", "int32_t", [s for _, s in multipliers]))
            params.update(
                out_zero_point=y.zero_point,
                act_min=low,
                act_max=high,
                multiplier=Ref(arrays[2].name),
                shift=Ref(arrays[3].name),
            )
            function, output = "edgeopt_fully_connected", name
        self.add_step(
            Step(
                function,
                node_label(node),
                (x.tensor,),
                output,
                struct="edgeopt_fc_params",
                params=params,
                arrays=tuple(arrays),
                summary=f"fully connected {in_features} -> {out_features}",
            )
        )

    def plain_gemm(self, node: Any, exporter: str) -> dict[str, Any]:
        """A Gemm's attributes, or the refusal of one that is not ``y = x W^T + b`` (the
        fully connected layer both the C and the TFLite exporter write)."""
        attrs = attributes(node)
        if (
            attrs.get("transA", 0)
            or attrs.get("alpha", 1.0) != 1.0
            or attrs.get("beta", 1.0) != 1.0
        ):
            raise self.fail(
                f"node {node_label(node)} uses transA, alpha or beta; the {exporter} exporter "
                "writes Gemm as a fully connected layer (y = x W^T + b)."
            )
        return attrs

    def lower_Gemm(self, node: Any) -> None:
        attrs = self.plain_gemm(node, "C")
        x = self.input(node, 0)
        q, w_scale = self.weights(node, 1)
        weights = q if attrs.get("transB", 0) else q.T
        self.fully_connected(node, x, weights, w_scale, 2)

    def lower_MatMul(self, node: Any) -> None:
        x = self.input(node, 0)
        q, w_scale = self.weights(node, 1)
        if q.ndim != 2:
            raise self.fail(f"node {node_label(node)} multiplies by a {q.ndim}-D weight; 2-D only.")
        self.fully_connected(node, x, q.T, w_scale, 99)

    def pool_params(self, node: Any, x: Buffer, y: Buffer) -> dict[str, Any]:
        attrs = attributes(node)
        if len(x.shape) != 4:
            raise self.fail(f"node {node_label(node)} pools a {len(x.shape)}-D tensor; 4-D only.")
        kernel = list(attrs.get("kernel_shape", x.shape[2:]))
        strides = list(attrs.get("strides", [1, 1]))
        if any(d != 1 for d in attrs.get("dilations", [1, 1])) or attrs.get("storage_order", 0):
            raise self.fail(
                f"node {node_label(node)} uses dilations or storage_order; not supported."
            )
        pads = self.pads(node, attrs, kernel, strides, [1, 1], x.shape[2:], y.shape[2:])
        return {
            "channels": x.shape[1],
            "in_height": x.shape[2],
            "in_width": x.shape[3],
            "out_height": y.shape[2],
            "out_width": y.shape[3],
            "kernel_height": kernel[0],
            "kernel_width": kernel[1],
            "stride_height": strides[0],
            "stride_width": strides[1],
            "pad_top": pads[0],
            "pad_left": pads[1],
            "in_zero_point": x.zero_point,
            "out_zero_point": y.zero_point,
        }

    def lower_MaxPool(self, node: Any) -> None:
        x = self.input(node, 0)
        if len(node.output) > 1 and node.output[1]:
            raise self.fail(f"node {node_label(node)} returns indices; not supported.")
        name = self.quantized_output(node)
        y = self.buffers[name]
        params = self.pool_params(node, x, y)
        arrays, params["table"] = self.rescale_table(x, y)
        self.add_step(
            Step(
                "edgeopt_max_pool2d",
                node_label(node),
                (x.tensor,),
                name,
                struct="edgeopt_pool_params",
                params=params,
                arrays=arrays,
                summary=f"max pool {params['kernel_height']}x{params['kernel_width']}",
            )
        )

    def lower_AveragePool(self, node: Any) -> None:
        x = self.input(node, 0)
        name = self.quantized_output(node)
        y = self.buffers[name]
        params = self.pool_params(node, x, y)
        attrs = attributes(node)
        if attrs.get("ceil_mode", 0) and attrs.get("count_include_pad", 0):
            raise self.fail(f"node {node_label(node)} combines ceil_mode and count_include_pad.")
        params.update(
            count_include_pad=int(attrs.get("count_include_pad", 0)),
            in_scale=f32(x.scale),
            out_scale=f32(y.scale),
            out_offset=128 if y.onnx_type == UINT8 else 0,
        )
        self.add_step(
            Step(
                "edgeopt_avg_pool2d",
                node_label(node),
                (x.tensor,),
                name,
                struct="edgeopt_pool_params",
                params=params,
                summary=f"average pool {params['kernel_height']}x{params['kernel_width']}",
            )
        )

    def lower_GlobalAveragePool(self, node: Any) -> None:
        x = self.input(node, 0)
        name = self.quantized_output(node)
        y = self.buffers[name]
        if len(x.shape) not in (3, 4):
            raise self.fail(
                f"node {node_label(node)} pools a {len(x.shape)}-D tensor; 3-D or 4-D only."
            )
        height, width = (x.shape[2], x.shape[3]) if len(x.shape) == 4 else (1, x.shape[2])
        plane = height * width
        # ONNX Runtime's order: x_scale / (y_scale * size), in float32
        multiplier, shift = fixed_point(float(f32(x.scale) / (f32(y.scale) * f32(plane))))
        params = {
            "channels": x.shape[1],
            "in_height": height,
            "in_width": width,
            "out_height": 1,
            "out_width": 1,
            "in_zero_point": x.zero_point,
            "out_zero_point": y.zero_point,
            "multiplier": multiplier,
            "shift": shift,
            "table": None,
        }
        self.add_step(
            Step(
                "edgeopt_global_avg_pool",
                node_label(node),
                (x.tensor,),
                name,
                struct="edgeopt_pool_params",
                params=params,
                summary=f"global average pool {height}x{width}",
            )
        )
