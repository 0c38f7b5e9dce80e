"""``bench``: rows per provider, batch and thread count on real ONNX Runtime sessions; energy from
RAPL files laid out like sysfs, or the target's estimate; bad input as one sentence, exit 2."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto
from onnx import helper
from onnx import numpy_helper

from clitools import run_cli as _run_cli
from edgeopt.data import load_data
from edgeopt.errors import InputError
from edgeopt.export.onnx import export_onnx
from edgeopt.measure.bench import PROVIDERS
from edgeopt.measure.bench import BenchConfig
from edgeopt.measure.bench import bench
from edgeopt.measure.energy import RaplDomain
from edgeopt.measure.energy import RaplMeter
from edgeopt.measure.energy import rapl_meter
from edgeopt.models import load_model

QUICK = {"warmup_runs": 1, "min_runs": 5, "min_seconds": 0.0}


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """zoo:cnn-s for digits (untrained: timing does not depend on the weights), dynamic batch."""
    handle = load_model("zoo:cnn-s", data=load_data("digits"))
    return export_onnx(handle, tmp_path_factory.mktemp("bench") / "cnn.onnx")


def _empty_powercap(tmp_path: Path) -> Path:
    folder = tmp_path / "powercap"
    folder.mkdir()
    return folder


def test_bench_has_a_row_per_batch_and_thread_count(cnn: Path, tmp_path: Path) -> None:
    config = BenchConfig(batches=(1, 4), threads=(1, 2), **QUICK)
    report = bench(cnn, config, powercap_root=_empty_powercap(tmp_path))
    assert [(r.provider, r.threads, r.batch) for r in report.rows] == [
        ("cpu", 1, 1),
        ("cpu", 1, 4),
        ("cpu", 2, 1),
        ("cpu", 2, 4),
    ]
    for row in report.rows:
        assert row.status == "ok" and row.runs >= 5
        assert row.p50_ms is not None and row.p90_ms is not None and row.p99_ms is not None
        assert 0 < row.p50_ms <= row.p90_ms <= row.p99_ms
        # Throughput is samples over the loop's time: within a few x of batch / p50.
        assert row.throughput_per_s is not None and row.batch is not None
        assert 0.2 < row.throughput_per_s / (row.batch * 1e3 / row.p50_ms) < 5
        assert row.energy_uj is None and row.energy_method is None
        assert row.energy_note is not None and "no RAPL zones" in row.energy_note
    assert report.input == "random standard normal float (seed 0)"


def test_bench_feeds_the_test_split(cnn: Path, tmp_path: Path) -> None:
    report = bench(cnn, BenchConfig(batches=(2,), **QUICK), data="digits")
    assert report.input.startswith("normalized test split of digits")
    assert report.rows[0].is_ok


def test_unknown_provider_names_the_known_ones() -> None:
    with pytest.raises(InputError, match="unknown execution provider 'gpu'; known providers: cpu"):
        BenchConfig(providers=("gpu",))


@pytest.mark.parametrize("batches", [(0,), (1, -2), (1.5,), ("8",), ()])
def test_batches_must_be_whole_numbers_of_one_or_more(batches: tuple[object, ...]) -> None:
    with pytest.raises(InputError, match="bench: .*batch size"):
        BenchConfig(batches=batches)  # type: ignore[arg-type]


def test_config_survives_a_dict_round_trip() -> None:
    config = BenchConfig(batches=(1, 8), threads=(2,), providers=("CUDAExecutionProvider",))
    raw = json.loads(json.dumps(config.to_dict()))  # lists, as from JSON or YAML
    assert BenchConfig.from_dict(raw) == config and config.providers == ("cuda",)


def test_a_provider_missing_from_this_build_is_an_unavailable_row(cnn: Path) -> None:
    missing = [s for s, n in PROVIDERS.items() if n not in onnxruntime.get_available_providers()]
    if not missing:
        pytest.skip("this onnxruntime build has every known provider")
    config = BenchConfig(batches=(1,), providers=("cpu", missing[0]), **QUICK)
    report = bench(cnn, config)
    row = report.rows[-1]
    assert row.provider == missing[0] and row.batch is None and row.p50_ms is None
    assert row.status.startswith(f"unavailable: {PROVIDERS[missing[0]]} is not in this")
    assert report.rows[0].is_ok


def _fixed_batch_model(path: Path) -> Path:
    weight = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["logits"])],
        "fixed",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, 6, 6])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_a_fixed_batch_model_skips_other_batches(tmp_path: Path) -> None:
    model = _fixed_batch_model(tmp_path / "fixed.onnx")
    report = bench(model, BenchConfig(batches=(1, 8), **QUICK))
    assert report.row("cpu", 1, 1).is_ok
    assert report.row("cpu", 8, 1).status.startswith(
        "skipped: the model's batch dimension is fixed at 1"
    )


def _zone(root: Path, name: str, label: str, energy_uj: int, max_uj: int) -> None:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text(f"{label}\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")


def test_rapl_reads_package_zones_only(tmp_path: Path) -> None:
    _zone(tmp_path, "intel-rapl:0", "package-0", 1000, 2**32)
    _zone(tmp_path, "intel-rapl:0:0", "core", 10, 2**32)  # a sub-zone: inside the package
    _zone(tmp_path, "intel-rapl:1", "psys", 99, 2**32)  # platform: overlaps the packages
    meter, why = rapl_meter(tmp_path)
    assert meter is not None and why == ""
    assert [d.name for d in meter.domains] == ["package-0"]
    assert meter.read() == (1000.0,)


def test_rapl_counter_wraps_at_its_range() -> None:
    meter = RaplMeter((RaplDomain("package-0", Path("unused"), 1000),))
    assert meter.energy_uj((990.0,), (5.0,)) == 16.0  # 990 -> 1000 -> 0 -> 5
    assert meter.energy_uj((5.0,), (25.0,)) == 20.0


def test_bench_reads_rapl_when_present_else_estimates(cnn: Path, tmp_path: Path) -> None:
    root = tmp_path / "sysfs-powercap"
    _zone(root, "intel-rapl:0", "package-0", 123456, 2**32)
    measured = bench(cnn, BenchConfig(batches=(1,), **QUICK), powercap_root=root).rows[0]
    # The file does not advance (no hardware behind it): measured, and zero.
    assert measured.energy_method == "measured (RAPL package domain)"
    assert measured.energy_uj == 0.0
    empty = _empty_powercap(tmp_path)
    config = BenchConfig(batches=(1,), target="cortex-m4", **QUICK)
    estimated = bench(cnn, config, powercap_root=empty).rows[0]
    assert estimated.energy_method == "estimated (cortex-m4)"
    assert estimated.energy_uj is not None and estimated.energy_uj > 0
    assert estimated.energy_note == f"no RAPL zones under {empty}"


run_cli = functools.partial(_run_cli, is_err_flat=True)


def test_cli_bench_writes_json(
    cnn: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", str(cnn), "--batch", "1,2", "--target", "cortex-m4", "--json", str(out)]
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0 and "bench of" in stdout
    report = json.loads(out.read_text())
    assert [row["batch"] for row in report["rows"]] == [1, 2]
    assert all(row["status"] == "ok" and row["latency_ms"]["p50"] > 0 for row in report["rows"])
    assert report["environment"]["onnxruntime"] == onnxruntime.__version__


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--provider", "cpu,warp"], "unknown execution provider 'warp'; known providers: cpu"),
        (["--batch", "0,8"], "batch size must be at least 1, got 0"),
        (["--batch", "1,eight"], "--batch: 'eight' is not a whole number"),
        (["--threads", "1.5"], "--threads: '1.5' is not a whole number"),
    ],
)
def test_cli_bench_bad_input_is_one_sentence_exit_2(
    option: list[str], message: str, cnn: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, stdout, err = run_cli(["bench", str(cnn), *option], capsys)
    assert code == 2 and message in err and err.startswith("error: ")
    assert "Traceback" not in err and "bench of" not in stdout


def test_threads_above_the_cores_and_a_batch_beyond_memory_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--threads 100000 crashed ONNX Runtime and --batch 100000000 allocated 24 GB: both are
    one sentence and exit 2 now, before anything is allocated."""
    import os

    from edgeopt.models import load_model

    model = export_onnx(load_model("zoo:lenet5"), tmp_path / "lenet5.onnx")
    with pytest.raises(InputError, match=f"more than this machine's {os.cpu_count()} cores"):
        BenchConfig(threads=(100_000,))
    args = ["bench", str(model), "--batch", "100000000"]
    code, _, err = _run_cli(args, capsys, is_err_flat=True)
    assert code == 2 and "give a smaller --batch" in err and "GiB" in err
    code, _, err = _run_cli(["bench", str(model), "--threads", "100000"], capsys, is_err_flat=True)
    assert code == 2 and "cores" in err


def test_bench_estimates_energy_as_profile_does_front_end_included(tmp_path: Path) -> None:
    """One estimate for both commands: bench left the audio front end out that profile priced,
    so the two gave different energies for the same file on the same target."""
    from edgeopt.measure import profile_onnx
    from edgeopt.target import Target
    from measure.test_profile import _tone_folder

    data = load_data(f"audio:{_tone_folder(tmp_path)}?mfcc=10")
    path = export_onnx(load_model("zoo:cnn-s", data=data), tmp_path / "kws.onnx")
    target = Target.from_name("cortex-m4")
    profiled = profile_onnx(path, data=data, target=target, is_latency_measured=False)
    config = BenchConfig(batches=(1,), target="cortex-m4", **QUICK)
    row = bench(str(path), config, data=data, powercap_root=_empty_powercap(tmp_path)).rows[0]
    assert profiled.estimate is not None and profiled.estimate.frontend_latency_ms
    assert row.energy_uj == pytest.approx(profiled.estimate.energy_uj)
    assert row.energy_method == "estimated (cortex-m4, audio front end included)"
