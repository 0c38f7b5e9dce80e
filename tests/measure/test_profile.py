from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper

from edgeopt.config import TrainConfig
from edgeopt.errors import InputError
from edgeopt.export.onnx import export_onnx
from edgeopt.graph import analyse
from edgeopt.graph import read_graph
from edgeopt.measure import profile
from edgeopt.measure import profile_onnx
from edgeopt.measure.memory import plan_memory
from edgeopt.models import load_model
from edgeopt.training import train

JSON_KEYS = {
    "params",
    "macs",
    "size_bytes",
    "peak_ram_bytes",
    "latency_ms",
    "accuracy",
    "estimate",
    "fits",
    "layers",
}


@pytest.fixture(scope="module")
def trained_cnn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    result = train("zoo:cnn-s", "digits", TrainConfig(epochs=6))
    path = export_onnx(result.model, tmp_path_factory.mktemp("cnn") / "cnn.onnx")
    return path, result.test_accuracy


def test_lenet5_peak_ram_is_the_hand_count() -> None:
    # conv1 writes 6x28x28 floats (ReLU fused, in place); pool1 then needs them and its own
    # 6x14x14 output at once: the largest footprint of the schedule.
    metrics = profile("zoo:lenet5", is_latency_measured=False)
    assert metrics.peak_ram_bytes == (6 * 28 * 28 + 6 * 14 * 14) * 4
    assert max(layer.live_bytes for layer in metrics.layers) == metrics.peak_ram_bytes


def test_profile_measures_the_artifact(trained_cnn: tuple[Path, float]) -> None:
    path, torch_accuracy = trained_cnn
    metrics = profile(str(path), data="digits", target="cortex-m4")
    assert metrics.size_bytes == path.stat().st_size
    assert metrics.accuracy == pytest.approx(torch_accuracy, abs=1e-9)
    lat = metrics.latency_ms
    assert lat is not None and 0 < lat.p50 <= lat.p90 <= lat.p99
    assert lat.runs >= 50 and lat.threads == 1
    assert metrics.estimate is not None and metrics.estimate.energy_uj > 0
    assert metrics.fits == {"flash": True, "ram": True}
    assert "measured" in metrics.provenance["latency_ms"]
    assert "estimated" in metrics.provenance["estimate"]


def test_json_has_the_stable_keys(trained_cnn: tuple[Path, float], tmp_path: Path) -> None:
    payload = json.loads(json.dumps(profile(str(trained_cnn[0]), target="host").to_dict()))
    assert JSON_KEYS <= set(payload)
    assert set(payload["latency_ms"]) >= {"p50", "p90", "p99"}
    assert set(payload["estimate"]) >= {"latency_ms", "energy_uj"}
    assert set(payload["fits"]) == {"flash", "ram"}
    assert {"name", "op_type", "macs", "params", "live_bytes"} <= set(payload["layers"][0])


def test_input_shape_that_does_not_match_the_data_is_refused(tmp_path: Path) -> None:
    path = export_onnx(load_model("zoo:lenet5"), tmp_path / "lenet5.onnx")
    with pytest.raises(InputError, match="takes input 1x28x28 but digits gives 1x8x8"):
        profile(str(path), data="digits")


def test_size_counts_external_data(tmp_path: Path) -> None:
    path = export_onnx(load_model("zoo:lenet300"), tmp_path / "inline.onnx")
    model = onnx.load(str(path))
    split = tmp_path / "split.onnx"
    onnx.save(model, str(split), save_as_external_data=True, location="w.bin", size_threshold=0)
    total = split.stat().st_size + (tmp_path / "w.bin").stat().st_size
    metrics = profile(str(split), is_latency_measured=False)
    assert metrics.size_bytes == total > 266_610 * 4


def _residual_graph() -> onnx.ModelProto:
    """x -> Relu -> a; a -> Relu -> b; out = a + b: ``a`` must stay live until the add."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1000])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 1000])
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["a"], name="first"),
        helper.make_node("Sigmoid", ["a"], ["b"], name="second"),
        helper.make_node("Add", ["a", "b"], ["out"], name="add"),
    ]
    graph = helper.make_graph(nodes, "residual", [x], [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_liveness_keeps_a_skip_connection_alive() -> None:
    plan = plan_memory(read_graph(_residual_graph()))
    # first: x + a; second: a + b (x freed); add: a + b + out
    assert plan.step_bytes == (8000, 8000, 12000)
    assert plan.peak_bytes == 12000


def test_qdq_graph_counts_int8_layers_and_int8_memory(tmp_path: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization import quantize_static

    fp32 = export_onnx(load_model("zoo:lenet5"), tmp_path / "fp32.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.batches = iter(
                [{"input": rng.standard_normal((1, 1, 28, 28)).astype(np.float32)}] * 4
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    int8 = tmp_path / "int8.onnx"
    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ)
    _, float_layers = analyse(onnx.load(str(fp32)))
    _, int8_layers = analyse(onnx.load(str(int8)))
    mac_layers = [layer for layer in int8_layers if layer.macs]
    assert mac_layers and all(layer.dtype == "int8" for layer in mac_layers)
    assert sum(layer.macs for layer in int8_layers) == sum(layer.macs for layer in float_layers)
    assert sum(layer.params for layer in int8_layers) == 61_706
    int8_metrics = profile_onnx(int8, is_latency_measured=False)
    float_metrics = profile_onnx(fp32, is_latency_measured=False)
    assert int8_metrics.peak_ram_bytes * 4 == float_metrics.peak_ram_bytes
    assert int8_metrics.size_bytes * 3 < float_metrics.size_bytes


def test_threads_below_one_are_refused() -> None:
    with pytest.raises(InputError, match="threads must be at least 1"):
        profile("zoo:lenet5", threads=0)


def _tone_folder(root: Path) -> Path:
    """Eight FSDD-named 8 kHz tones per class (takes 0-4 test): audio data with a front end."""
    import wave

    rate = 8000
    for label, hz in (("0", 500.0), ("1", 1500.0)):
        for take in range(8):
            signal = 0.5 * np.sin(2 * np.pi * hz * np.arange(rate // 2) / rate)
            with wave.open(str(root / f"{label}_ann_{take}.wav"), "wb") as handle:
                handle.setnchannels(1)
                handle.setsampwidth(2)
                handle.setframerate(rate)
                handle.writeframes((signal * 32767).astype("<i2").tobytes())
    return root


def test_audio_front_end_is_priced_where_the_target_can_and_said_where_not(
    tmp_path: Path,
) -> None:
    from edgeopt.data import load_data

    data = load_data(f"audio:{_tone_folder(tmp_path)}?mfcc=10")
    path = export_onnx(load_model("zoo:cnn-s", data=data), tmp_path / "kws.onnx")
    priced = profile_onnx(path, data=data, target=_target("cortex-m4"), is_latency_measured=False)
    estimate = priced.estimate
    assert estimate is not None and estimate.frontend_latency_ms is not None
    assert estimate.frontend_latency_ms > 1.0  # 49 FFTs of 512 points: about 13 ms at 120 MHz
    assert estimate.latency_ms == pytest.approx(
        estimate.model_latency_ms + estimate.frontend_latency_ms
    )
    assert "includes the mfcc front end" in priced.provenance["estimate"]
    unpriced = profile_onnx(path, data=data, target=_target("esp32-s3"), is_latency_measured=False)
    assert unpriced.estimate is not None and unpriced.estimate.frontend_latency_ms is None
    assert "prices no audio front end" in unpriced.provenance["estimate"]


def _target(name: str) -> object:
    from edgeopt.target import Target

    return Target.from_name(name)


def test_symbolic_input_dimensions_are_counted_at_the_datas_shape(tmp_path: Path) -> None:
    """A model taking N x 1 x H x W was counted as 1x1 (152 MACs, 72 B of RAM) without saying
    so; without data it is now counted at the stated default 1, with the data at its shape."""
    weight = np.ones((8, 1, 3, 3), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "symbolic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, "H", "W"])],
        [onnx.numpy_helper.from_array(weight, "w")],
    )
    model = onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "symbolic.onnx"
    onnx.save(model, path)
    defaulted = profile_onnx(path, is_latency_measured=False)
    assert defaulted.macs == 8 * 9 and defaulted.batch == 1
    assert defaulted.notes == (
        "input 'x': symbolic dimensions 'H', 'W' bound to 1 (no data gave them)",
    )
    assert "symbolic 'N' in the file, bound to 1" in defaulted.provenance["batch"]
    from edgeopt.data import load_data

    metrics = profile_onnx(path, data=load_data("digits"), is_latency_measured=False)
    assert metrics.macs == 8 * 9 * 8 * 8  # 8 filters of 3x3 at every one of the 8x8 pixels
    assert metrics.peak_ram_bytes == (1 + 8) * 8 * 8 * 4
