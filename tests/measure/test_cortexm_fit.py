"""The cost model of edgeopt's C kernels fitted to the emulator (profiles ``cortex-m4-edgeopt-c``,
``cortex-m7-edgeopt-c``, ``cortex-m33-edgeopt-c``: one instruction fit, each core's assumed
cycles per instruction).

The emulated tests count held-out zoo models on QEMU's Cortex-M4, M7 and M33 and hold
``profile``'s estimate on each core's profile within 10% of the count per inference; they skip
with the reason where arm-none-eabi-gcc (with newlib), qemu-system-arm or gcc is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper

from edgeopt.graph import analyse
from edgeopt.measure import profile_onnx
from edgeopt.measure.cortexm import _M4_CPI
from edgeopt.measure.cortexm import CORES
from edgeopt.measure.cortexm import has_cortexm_tools
from edgeopt.measure.kernelfit import CONSTANTS
from edgeopt.measure.kernelfit import LayerCount
from edgeopt.measure.kernelfit import fit_kernels
from edgeopt.measure.kernelfit import measure_model
from edgeopt.measure.kernelfit import predict
from edgeopt.target import Target

PROFILE = "cortex-m4-edgeopt-c"
#: Every core with an edgeopt-c profile: the M4's instruction fit x the core's assumed CPI.
CORE_PROFILES = {core: f"{core}-edgeopt-c" for core in ("cortex-m4", "cortex-m7", "cortex-m33")}
RESULTS = Path(__file__).parents[2] / "benchmarks" / "results" / "cortexm_fit.json"
#: Models the profile was not fitted on (benchmarks/cortexm_fit.py HELD_OUT).
HELD_OUT = ("zoo:resnet8?input=3x32x32&classes=10", "zoo:ad-autoencoder?input=640")
#: A MAC layer holding at least this share of the inference is predicted within LAYER_BOUND.
LAYER_SHARE = 0.05
LAYER_BOUND = 0.20

needs_arm = pytest.mark.skipif(
    not has_cortexm_tools(),
    reason="arm-none-eabi-gcc with newlib, qemu-system-arm or gcc is not installed (Debian: "
    "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm gcc)",
)


def _value(target: Target, name: str) -> float:
    parts = name.split(".")
    value = getattr(target, parts[0])
    for part in parts[1:]:
        value = value.get(part, 0.0)
    return float(value)


@pytest.mark.parametrize("core", sorted(CORE_PROFILES))
def test_profile_holds_the_benchmark_fit_times_the_cores_cpi(core: str) -> None:
    fitted = json.loads(RESULTS.read_text())["instructions_per_unit"]
    target = Target.from_name(CORE_PROFILES[core])
    cpi = CORES[core].cpi
    assert core != "cortex-m4" or cpi == _M4_CPI
    for name in CONSTANTS:
        assert _value(target, name) == pytest.approx(fitted[name] * cpi, rel=0.01, abs=1e-3)
        assert "benchmarks/cortexm_fit.py" in target.sources[name]
        assert f"{cpi} cycles per instruction" in target.sources[name]


def test_held_out_models_are_not_among_those_fitted() -> None:
    source = Target.from_name(PROFILE).sources["cycles_per_mac.conv.int8"]
    fitted_on = source.split("held out")[0]
    for spec in HELD_OUT:
        assert spec.removeprefix("zoo:").split("?")[0] not in fitted_on


def test_fit_recovers_known_kernel_constants() -> None:
    truth = {"cycles_per_mac.pointwise.int8": 6.0, "cycles_per_output.pointwise.int8": 140.0}
    truth["layer_overhead_cycles"] = 200.0
    counts = []
    for macs, outputs in ((4096, 512), (65536, 1024), (2048, 2048)):
        layer = SimpleNamespace(
            kind="conv", macs=macs, output_elements=outputs, ops=0, is_pointwise=True
        )
        counts.append(LayerCount(layer, "edgeopt_pointwise_conv2d", round(predict(truth, layer))))
    fit = fit_kernels(counts)
    for name, value in truth.items():
        assert fit[name] == pytest.approx(value, rel=1e-3)


def _conv(name: str, kernel: int, pads: int) -> onnx.NodeProto:
    return helper.make_node("Conv", ["x", f"w{kernel}"], [name], name=name, pads=[pads] * 4)


def test_analyse_marks_pointwise_convolutions_and_their_kernel() -> None:
    weights = [
        helper.make_tensor(f"w{k}", TensorProto.FLOAT, [4, 4, k, k], np.ones(16 * k * k))
        for k in (1, 3)
    ]
    graph = helper.make_graph(
        [_conv("p", 1, 0), _conv("c", 3, 1), _conv("q", 1, 1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "pcq"],
        weights,
    )
    _, layers = analyse(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    by_name = {layer.name: layer for layer in layers}
    assert [by_name[n].is_pointwise for n in "pcq"] == [True, False, False]  # q is padded
    assert [by_name[n].kernel_elements for n in "pcq"] == [1, 9, 1]
    target = Target.from_name(PROFILE)
    pointwise = target.layer_cycles(by_name["p"])
    padded = target.layer_cycles(by_name["q"])  # same MACs, priced as a general convolution
    assert padded > pointwise > 0


@needs_arm
@pytest.mark.slow
@pytest.mark.parametrize("core", sorted(CORE_PROFILES))
@pytest.mark.parametrize("spec", HELD_OUT)
def test_profile_predicts_a_held_out_model_within_10_percent(
    spec: str, core: str, tmp_path: Path
) -> None:
    model = measure_model(spec, tmp_path, core=core)
    target = Target.from_name(CORE_PROFILES[core])
    cpi = CORES[core].cpi
    estimate = profile_onnx(model.onnx_path, target=target, is_latency_measured=False).estimate
    assert estimate is not None and not estimate.uncounted_ops
    measured = model.run.instructions_per_inference
    assert estimate.cycles / cpi == pytest.approx(measured, rel=0.10)
    for count in model.counts:
        assert count.layer.is_pointwise == (count.function == "edgeopt_pointwise_conv2d")
        cycles = target.layer_cycles(count.layer)
        if count.layer.macs and count.instructions >= LAYER_SHARE * measured:
            assert cycles / cpi == pytest.approx(count.instructions, rel=LAYER_BOUND), count
