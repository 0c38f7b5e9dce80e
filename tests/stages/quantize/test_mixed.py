from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from onnx import TensorProto

from edgeopt.errors import BudgetError
from edgeopt.errors import InputError
from edgeopt.measure import profile_onnx
from edgeopt.stages.quantize import PTQConfig
from edgeopt.stages.quantize import QuantizeResult
from edgeopt.stages.quantize import quantize
from edgeopt.stages.quantize.calibrate import calibrate
from edgeopt.stages.quantize.mixed import FLOAT
from edgeopt.stages.quantize.mixed import LayerSensitivity
from edgeopt.stages.quantize.mixed import MixedPrecisionConfig
from edgeopt.stages.quantize.mixed import allocate_bits
from edgeopt.stages.quantize.qdq import prepare
from edgeopt.stages.quantize.qdq import write_qdq
from edgeopt.stages.quantize.qdq import written_weight_scales


@dataclass(frozen=True)
class Sizes:
    int8: int
    int4: int


@pytest.fixture(scope="module")
def sizes(cnn_s, tmp_path_factory: pytest.TempPathFactory) -> Sizes:
    """Sizes of the all-8-bit and all-4-bit PTQ files of the trained cnn-s."""
    folder = tmp_path_factory.mktemp("uniform")
    found = {}
    for bits in (8, 4):
        out = folder / f"w{bits}.onnx"
        quantize(str(cnn_s.onnx_path), PTQConfig(bits=bits), data=cnn_s.data, output=out)
        found[bits] = out.stat().st_size
    return Sizes(found[8], found[4])


@pytest.fixture(scope="module")
def mixed(cnn_s, sizes: Sizes, tmp_path_factory: pytest.TempPathFactory) -> QuantizeResult:
    """Mixed precision with a budget halfway between the all-4-bit and all-8-bit files."""
    budget = (sizes.int8 + sizes.int4) // 2
    out = tmp_path_factory.mktemp("mixed") / "mixed.onnx"
    return quantize(
        str(cnn_s.onnx_path),
        MixedPrecisionConfig(max_flash_bytes=budget),
        data=cnn_s.data,
        output=out,
    )


def test_sensitivity_table_has_every_weighted_layer(mixed: QuantizeResult) -> None:
    assert mixed.plan is not None
    rows = mixed.plan.sensitivity
    assert [row.op_type for row in rows] == ["Conv", "Conv", "Conv", "Gemm"]
    assert [row.params for row in rows] == [160, 4640, 9248, 330]  # weights and biases
    for row in rows:
        assert row.float_bytes > row.int8_bytes > row.int4_bytes
        assert row.drop_8 is not None and row.drop_4 is not None
        assert -1.0 <= row.drop_8 <= 1.0 and -1.0 <= row.drop_4 <= 1.0
    # the biggest layer halves (plus scales and zero points) going from 8 to 4 bits
    assert rows[2].int8_bytes - rows[2].int4_bytes == pytest.approx(9216 / 2, abs=32)


def test_written_file_meets_the_budget_and_mixes_bits(mixed: QuantizeResult, sizes: Sizes) -> None:
    assert mixed.plan is not None and mixed.model.onnx_path is not None
    size = mixed.model.onnx_path.stat().st_size
    assert size == mixed.plan.size_bytes <= mixed.plan.budget_bytes
    assert abs(mixed.plan.predicted_bytes - size) <= 64  # the byte model predicts the file
    assert set(mixed.plan.bits.values()) == {8, 4}  # the budget forces some, not all, to 4
    model = onnx.load(str(mixed.model.onnx_path))
    types = {
        init.name.removesuffix("_quantized"): init.data_type
        for init in model.graph.initializer
        if init.name.endswith("weight_quantized")
    }
    assert sorted(types.values()).count(TensorProto.INT4) == list(mixed.plan.bits.values()).count(4)


def test_plan_is_recorded_in_the_result_and_the_file(mixed: QuantizeResult) -> None:
    record = json.loads(json.dumps(mixed.to_dict()))
    assert record["mixed"]["bits"] == {k: v for k, v in mixed.plan.bits.items()}  # type: ignore[union-attr]
    assert len(record["mixed"]["sensitivity"]) == 4
    meta = {p.key: p.value for p in onnx.load(str(mixed.model.onnx_path)).metadata_props}
    assert json.loads(meta["edgeopt.quantize"])["kind"] == "quantize.mixed"


def test_accuracy_of_the_mixed_file_stays_close(mixed: QuantizeResult, cnn_s) -> None:
    fp32 = profile_onnx(cnn_s.onnx_path, data=cnn_s.data, is_latency_measured=False).accuracy
    got = profile_onnx(mixed.model.onnx_path, data=cnn_s.data, is_latency_measured=False).accuracy
    assert fp32 is not None and got is not None and fp32 - got <= 0.03


def test_budget_below_the_all_4bit_file_says_by_how_much(
    cnn_s, sizes: Sizes, tmp_path: Path
) -> None:
    config = MixedPrecisionConfig(max_flash_bytes=sizes.int4 // 2)
    with pytest.raises(BudgetError, match=r"is [\d,]+ bytes below the smallest file") as caught:
        quantize(str(cnn_s.onnx_path), config, data=cnn_s.data, output=tmp_path / "m.onnx")
    assert "every weight 4-bit" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_large_budget_keeps_every_layer_8bit_or_float(cnn_s, tmp_path: Path) -> None:
    config = MixedPrecisionConfig(max_flash_bytes=10_000_000, allow_float=False)
    result = quantize(str(cnn_s.onnx_path), config, data=cnn_s.data, output=tmp_path / "m.onnx")
    assert result.plan is not None and set(result.plan.bits.values()) == {8}


def _row(name: str, drop_8: float, drop_4: float, weights: int) -> LayerSensitivity:
    return LayerSensitivity(name, "Conv", weights, 4 * weights, weights + 40, weights // 2 + 40,
                            drop_8, drop_4)  # fmt: skip


def test_a_sensitive_layer_stays_float_when_the_budget_allows() -> None:
    rows = [_row("sensitive", 0.02, 0.05, 1000), _row("robust", 0.0, 0.0, 1000)]
    assert allocate_bits(rows, 6000) == {"sensitive": FLOAT, "robust": 8}
    assert allocate_bits(rows, 2200) == {"sensitive": 8, "robust": 8}
    assert allocate_bits(rows, 1700) == {"sensitive": 8, "robust": 4}
    assert allocate_bits(rows, 500) is None


@settings(max_examples=40, deadline=None)
@given(
    layers=st.lists(
        st.tuples(
            st.integers(10, 2000),
            st.floats(-0.01, 0.05),
            st.floats(-0.01, 0.2),
        ),
        min_size=1,
        max_size=5,
    ),
    fraction=st.floats(0.2, 1.2),
)
def test_allocation_is_the_brute_force_optimum(
    layers: list[tuple[int, float, float]], fraction: float
) -> None:
    rows = [_row(f"l{i}", d8, max(d4, d8), w) for i, (w, d8, d4) in enumerate(layers)]
    budget = int(fraction * sum(r.float_bytes for r in rows))
    got = allocate_bits(rows, budget)
    options = [(8, 4, FLOAT)] * len(rows)
    feasible = [
        sum(r.drop_for(c) for r, c in zip(rows, combo, strict=True))
        for combo in itertools.product(*options)
        if sum(r.bytes_for(c) for r, c in zip(rows, combo, strict=True)) <= budget
    ]
    if not feasible:
        assert got is None
        return
    assert got is not None
    assert sum(r.bytes_for(got[r.layer]) for r in rows) <= budget
    assert sum(r.drop_for(got[r.layer]) for r in rows) <= min(feasible) + 1e-6


def test_write_qdq_takes_bits_per_layer(cnn_s) -> None:
    model = prepare(onnx.load(str(cnn_s.onnx_path)))
    ranges = calibrate(model, cnn_s.data.arrays("calib")[0])
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    qdq, floats = write_qdq(model, ranges, node_weight_bits={convs[1]: 4})
    types = {i.name: i.data_type for i in qdq.graph.initializer if i.name.endswith("_quantized")}
    weight = next(n for n in model.graph.node if n.name == convs[1]).input[1]
    assert types.pop(f"{weight}_quantized") == TensorProto.INT4
    assert {t for name, t in types.items() if name.endswith("weight_quantized")} == {
        TensorProto.INT8
    }
    assert floats == [] and next(o.version for o in qdq.opset_import if o.domain == "") == 21
    scales = written_weight_scales(qdq)  # the overridden weight keeps one scale per channel
    assert scales[weight].shape == (
        next(i for i in model.graph.initializer if i.name == weight).dims[0],
    )
    with pytest.raises(InputError, match="no Conv/Gemm/MatMul"):
        write_qdq(model, ranges, node_weight_bits={"node_relu": 4})
    with pytest.raises(InputError, match="weight bits must be 4 or 8, got 2"):
        write_qdq(model, ranges, node_weight_bits={convs[0]: 2})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_flash_bytes": 0}, "max_flash_bytes must be a positive number of bytes"),
        ({"max_flash_bytes": 1000, "candidates": (8, 3)}, "bits must be 4 or 8, got 3"),
        ({"max_flash_bytes": 1000, "candidates": ()}, "candidates must be a list"),
        ({"max_flash_bytes": 1000, "candidates": (8, 8)}, "the same bits twice"),
        ({"max_flash_bytes": 1000, "calibration": "kl"}, "calibration must be one of"),
    ],
)
def test_bad_config_field_is_one_sentence(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        MixedPrecisionConfig(**fields)  # type: ignore[arg-type]


def test_config_survives_a_dict_round_trip() -> None:
    config = MixedPrecisionConfig(max_flash_bytes=12345, candidates=(4,), allow_float=False)
    raw = json.loads(json.dumps(config.to_dict()))  # the tuple becomes a list on the way
    assert MixedPrecisionConfig.from_dict(raw) == config


def test_drops_are_fractions_and_the_table_is_in_pp(mixed: QuantizeResult) -> None:
    assert mixed.plan is not None
    row = mixed.plan.sensitivity[0]
    assert row.to_dict()["drop_pp"]["8"] == pytest.approx(100 * (row.drop_8 or 0.0))
    assert np.isfinite(mixed.plan.validation_drop)
