"""Target profiles: each built-in one loads, is cited and estimates sensibly; host is measured."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeopt.errors import InputError
from edgeopt.measure import host
from edgeopt.target import FRONTEND_KEYS
from edgeopt.target import MAC_KINDS
from edgeopt.target import Target
from edgeopt.target import list_targets

STATIC_TARGETS = [name for name in list_targets() if name != "host"]
#: Profiles priced by the cycle model (an Ethos-U profile's latency comes from Vela instead:
#: tests/test_target_npu.py, tests/measure/test_vela.py).
CYCLE_TARGETS = ["host", *(n for n in STATIC_TARGETS if Target.from_name(n).npu is None)]
REQUIRED_FIELDS = (
    "name",
    "clock_hz",
    "flash_bytes",
    "ram_bytes",
    "active_power_mw",
    "cycles_per_mac",
    "cycles_per_element",
    "layer_overhead_cycles",
)

# MLPerf Tiny KWS on NUCLEO-L4R5ZI (shared/research/perf-anchors.md section 3): the fastest
# published run (X-CUBE-AI 10.2, v1.3), the slowest (reference TFLM, v0.5), and the X-CUBE-AI 8.1
# run (v1.1) the cortex-m4 profile is derived from.
KWS_PUBLISHED_MS = (43.4, 181.9)
KWS_XCUBEAI_81_MS = 62.9


@dataclass(frozen=True)
class FakeLayer:
    """A layer as the estimator sees it (the LayerCost protocol of edgeopt.target)."""

    kind: str
    dtype: str
    macs: int
    output_elements: int
    bytes_moved: int


def kws_layers(dtype: str = "int8", scale: int = 1) -> list[FakeLayer]:
    """The MLPerf Tiny DS-CNN shape: 10x4 conv, four depthwise/pointwise pairs, a classifier.

    2,656,768 MACs in 10 layers (320k + 4 x 72k + 4 x 512k + 768), 25x5x64 activations.
    """
    act = 25 * 5 * 64
    layers = [FakeLayer("conv", dtype, 320_000 * scale, act, 490 + act + 2_560)]
    for _ in range(4):
        layers.append(FakeLayer("depthwise", dtype, 72_000 * scale, act, 2 * act + 576))
        layers.append(FakeLayer("conv", dtype, 512_000 * scale, act, 2 * act + 4_096))
    layers.append(FakeLayer("fc", dtype, 768 * scale, 12, 64 + 12 + 768))
    return layers


def numeric_fields(value: Any, prefix: str = "") -> Iterator[str]:
    """Dotted keys of every number in a profile's to_dict() (sources and flags excluded)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("sources", "is_measured") and not prefix:
                continue
            yield from numeric_fields(item, f"{prefix}{key}.")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield prefix.rstrip(".")


@pytest.fixture(scope="module", autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep the host measurement's disk cache out of the real home folder."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
        host._measure.cache_clear()
        yield home
        host._measure.cache_clear()


@pytest.mark.parametrize("name", list_targets())
def test_builtin_profile_loads_by_name(name: str) -> None:
    target = Target.from_name(name)
    assert target.name == name
    assert target.clock_hz > 0 and target.ram_bytes > 0 and target.flash_bytes > 0
    assert target.active_power_mw > 0
    assert set(target.dtypes) <= {"int8", "float32"}
    assert target.runtime


@pytest.mark.parametrize("name", list_targets())
def test_every_numeric_field_has_a_source(name: str) -> None:
    target = Target.from_name(name)
    fields = set(numeric_fields(target.to_dict()))
    # The validated error's three numbers share one source: the benchmark that measured it.
    error = {key for key in fields if key.startswith("validated_error.")}
    fields = fields - error | ({"validated_error"} if error else set())
    core = {key for key in fields if not key.startswith("frontend.") and key != "validated_error"}
    # a profile fitted to a library's kernels (cortex-m4-edgeopt-c) prices some kinds further
    fitted = ("cycles_per_output.", "cycles_per_channel.", "cycles_per_mac.pointwise.")
    assert "cycles_per_mac.conv.int8" in fields
    assert len({key for key in core if not key.startswith(fitted)}) == 14
    assert len(fields - core - {"validated_error"}) in (0, len(FRONTEND_KEYS))  # audio front end
    missing = sorted(fields - set(target.sources))
    assert not missing, f"{name}: no source for {missing}"
    assert all(len(target.sources[key]) > 20 for key in fields)
    assert set(target.sources) <= fields, f"{name}: sources for unknown fields"


@pytest.mark.parametrize("name", CYCLE_TARGETS)
def test_estimate_is_positive_and_grows_with_macs(name: str) -> None:
    target = Target.from_name(name)
    small = target.estimate(kws_layers())
    large = target.estimate(kws_layers(scale=2))
    assert small.latency_ms > 0 and small.energy_uj > 0 and small.cycles > 0
    assert len(small.layer_latency_ms) == 10
    assert large.latency_ms > small.latency_ms and large.energy_uj > small.energy_uj
    assert small.energy_uj == pytest.approx(small.latency_ms * target.active_power_mw)


@pytest.mark.parametrize("name", CYCLE_TARGETS)
def test_int8_is_cheaper_than_float32(name: str) -> None:
    target = Target.from_name(name)
    if "int8" not in target.dtypes or "float32" not in target.dtypes:
        pytest.skip(f"{name} does not run both int8 and float32")
    # Measured on the x86 host, ONNX Runtime's int8 depthwise convolution is slower than float32
    # (and so are its uint8 element-wise ops), so only the standard convolution is compared there.
    kinds = ("conv",) if target.is_measured else MAC_KINDS
    for kind in kinds:
        layer = {"kind": kind, "macs": 1_000_000, "output_elements": 10_000, "bytes_moved": 0}
        int8 = target.estimate([FakeLayer(dtype="int8", **layer)])
        float32 = target.estimate([FakeLayer(dtype="float32", **layer)])
        assert int8.latency_ms < float32.latency_ms, f"{name}: {kind}"


def test_profile_loads_from_a_yaml_path(tmp_path: Path) -> None:
    raw = Target.from_name("cortex-m4").to_dict()
    raw["name"] = "my-board"
    path = tmp_path / "my-board.yaml"
    path.write_text(yaml.safe_dump(raw))
    target = Target.from_name(str(path))
    assert target.name == "my-board"
    assert target.to_dict() == raw


@pytest.mark.parametrize("field", REQUIRED_FIELDS)
def test_missing_field_is_named(field: str) -> None:
    raw = Target.from_name("cortex-m4").to_dict()
    del raw[field]
    with pytest.raises(InputError, match=field):
        Target.from_dict(raw)


def test_negative_clock_is_named() -> None:
    raw = Target.from_name("cortex-m4").to_dict()
    raw["clock_hz"] = -120e6
    with pytest.raises(InputError, match="clock_hz"):
        Target.from_dict(raw)


@pytest.mark.parametrize("field", ["clock_hz", "flash_bytes", "ram_bytes", "active_power_mw"])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e400])
def test_an_infinite_or_nan_budget_is_bad_input(field: str, value: float) -> None:
    """``ram_bytes: .inf`` in a YAML profile was an OverflowError traceback."""
    raw = Target.from_name("cortex-m4").to_dict()
    raw[field] = value
    with pytest.raises(InputError, match=f"{field}.* finite number"):
        Target.from_dict(raw)


def test_unknown_target_lists_known_names() -> None:
    with pytest.raises(InputError, match="unknown target 'cortex-m99'") as error:
        Target.from_name("cortex-m99")
    assert all(name in str(error.value) for name in list_targets())


def test_cortex_m4_kws_estimate_is_within_2x_of_mlperf_tiny() -> None:
    estimate = Target.from_name("cortex-m4").estimate(kws_layers())
    low, high = KWS_PUBLISHED_MS
    assert low / 2 <= estimate.latency_ms <= high * 2
    assert KWS_XCUBEAI_81_MS / 2 <= estimate.latency_ms <= KWS_XCUBEAI_81_MS * 2


def test_host_profile_is_measured_and_plausible() -> None:
    target = Target.from_name("host")
    assert target.is_measured
    assert 0.5e9 <= target.clock_hz <= 6e9
    assert target.ram_bytes >= 2**28 and target.flash_bytes > 0
    assert all(value > 0 for row in target.cycles_per_mac.values() for value in row.values())
    assert all(value > 0 for value in target.cycles_per_element.values())
    # VNNI / dot-product int8 kernels: measured at about 3.5x fewer cycles than float32 here.
    assert target.cycles_per_mac["conv"]["int8"] < target.cycles_per_mac["conv"]["float32"]
    assert "measured on this machine" in target.sources["cycles_per_mac.conv.int8"]
    assert "1 thread" in target.sources["cycles_per_mac.conv.int8"]
    assert "RAPL" in target.sources["active_power_mw"]


def test_host_profile_is_cached_in_process() -> None:
    Target.from_name("host")
    start = time.perf_counter()
    again = Target.from_name("host")
    assert time.perf_counter() - start < 0.1
    assert again.cycles_per_mac == Target.from_name("host").cycles_per_mac


def test_host_measurement_is_cached_on_disk(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Target.from_name("host")
    folder = isolated_home / ".cache" / "edgeopt"
    caches = sorted(folder.glob("host-*.yaml"))
    assert len(caches) == 1 and not list(folder.glob("*.tmp"))
    cached = yaml.safe_load(caches[0].read_text())
    assert set(cached["fields"]["cycles_per_mac"]) == set(MAC_KINDS)

    def no_timing(*args: object) -> None:
        raise AssertionError("the host was timed again")

    host._measure.cache_clear()
    monkeypatch.setattr(host, "_time_host", no_timing)
    target = Target.from_name("host")
    assert (
        target.cycles_per_mac["conv"]["int8"] == cached["fields"]["cycles_per_mac"]["conv"]["int8"]
    )


@pytest.mark.parametrize(
    ("build", "kernel"),
    [
        (host._MAC_WORKLOADS["conv"][0], "QLinearConv"),
        (host._MAC_WORKLOADS["depthwise"][0], "QLinearConv"),
        (host._MAC_WORKLOADS["fc"][0], "QGemm"),
        (host._ELEMENT_WORKLOAD[0], "QLinearAdd"),
    ],
)
def test_host_int8_models_run_int8_kernels(build: Any, kernel: str, tmp_path: Path) -> None:
    import numpy as np
    import onnxruntime

    model, shape = build(2, True)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "profile")
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    session.run(None, {"x": np.zeros(shape, np.float32)})
    events = json.loads(Path(session.end_profiling()).read_text())
    ops = {
        e["args"]["op_name"] for e in events if e.get("cat") == "Node" and "op_name" in e["args"]
    }
    assert kernel in ops
    assert not ops & {"Conv", "Gemm", "Add"}, f"float kernels left: {sorted(ops)}"


#: The front-end counts of FSDD at 8 kHz, 40 ms frames every 20 ms, 40 mels, 10 MFCCs.
FSDD_FRONTEND_OPS = {
    "frames": 49,
    "fft_size": 512,
    "ffts": 49,
    "window_macs": 15_680,
    "power_macs": 25_186,
    "mel_macs": 24_157,
    "logs": 1_960,
    "dct_macs": 19_600,
}


@pytest.mark.parametrize("name", [n for n in STATIC_TARGETS if Target.from_name(n).frontend])
def test_front_end_cost_is_added_to_the_estimate_and_reported_apart(name: str) -> None:
    target = Target.from_name(name)
    model = target.estimate(kws_layers())
    both = target.estimate(kws_layers(), frontend_ops=FSDD_FRONTEND_OPS)
    steps = target.frontend_step_cycles(FSDD_FRONTEND_OPS)
    front_ms = sum(steps.values()) / target.clock_hz * 1e3
    assert model.frontend_latency_ms is None
    assert both.frontend_latency_ms == pytest.approx(front_ms)
    assert both.latency_ms == pytest.approx(model.latency_ms + front_ms)
    assert both.model_latency_ms == pytest.approx(model.latency_ms)
    assert both.energy_uj == pytest.approx(model.energy_uj + front_ms * target.active_power_mw)
    assert max(steps, key=steps.__getitem__) == "fft"  # 49 FFTs of 512 points dominate
    record = both.to_dict()
    assert record["method"] == "estimated"
    assert set(record["frontend_cycles"]) == {
        "framing",
        "window",
        "fft",
        "power",
        "mel",
        "log",
        "dct",
    }
    assert record["frontend_latency_ms"] == pytest.approx(front_ms)


def test_cortex_m4_fft_cost_is_the_cited_cmsis_measurement() -> None:
    # 49 real FFTs of 512 points at 6.8 cycles per N log2 N: 31,334 cycles each (source in YAML).
    steps = Target.from_name("cortex-m4").frontend_step_cycles(FSDD_FRONTEND_OPS)
    assert steps["fft"] == pytest.approx(49 * 6.8 * 512 * 9)
    assert (
        "arm_cfft_f32" in Target.from_name("cortex-m4").sources["frontend.fft_cycles_per_n_log2n"]
    )


def test_profile_without_front_end_costs_refuses_to_price_one() -> None:
    target = Target.from_name("esp32-s3")
    assert not target.frontend
    with pytest.raises(InputError, match="has no frontend costs"):
        target.estimate(kws_layers(), frontend_ops=FSDD_FRONTEND_OPS)


def test_missing_front_end_count_is_named() -> None:
    ops = {k: v for k, v in FSDD_FRONTEND_OPS.items() if k != "logs"}
    with pytest.raises(InputError, match="'logs'"):
        Target.from_name("cortex-m4").frontend_step_cycles(ops)


def test_negative_front_end_constant_is_named() -> None:
    raw = Target.from_name("cortex-m4").to_dict()
    raw["frontend"]["cycles_per_log"] = -1
    with pytest.raises(InputError, match="frontend.cycles_per_log"):
        Target.from_dict(raw)


def _laughs(levels: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + f"\ndescription: *a{levels - 1}\n"


def test_a_billion_laughs_profile_is_refused_at_once(tmp_path: Path) -> None:
    """A 1 KB profile whose description expanded to 9^9 strings took 71 s and 3 GB."""
    path = tmp_path / "laughs.yaml"
    raw = Target.from_name("cortex-m4").to_dict()
    path.write_text(yaml.safe_dump({k: v for k, v in raw.items() if k != "description"}))
    path.write_text(path.read_text() + _laughs(9))
    with pytest.raises(InputError, match="more than 100,000 values once its aliases"):
        Target.from_name(str(path))
    path.write_text("x: &x [1]\n" + "".join(f"k{i}: *x\n" for i in range(101)))
    with pytest.raises(InputError, match="more than 100 aliases"):
        Target.from_name(str(path))
    path.write_text("#" * (2 << 20))
    with pytest.raises(InputError, match="larger than 1,048,576 bytes"):
        Target.from_name(str(path))


def test_measured_profile_with_sources_not_a_mapping_is_one_sentence(tmp_path: Path) -> None:
    """A stranger's profile with ``is_measured: true`` and ``sources`` a string: refused before
    the host is timed, naming the field (it was an AttributeError)."""
    raw = yaml.safe_load((Path(host.__file__).parent.parent / "targets" / "host.yaml").read_text())
    raw.update(name="mine", is_measured=True, sources="see the datasheet")
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError, match="sources must be a mapping"):
        Target.from_name(str(path))
