"""Instructions on emulated Cortex-M cores: the library built with arm-none-eabi-gcc runs under
QEMU's MPS2 boards with ``-icount`` and computes what the host build computes, bit for bit.

The emulated tests skip with the reason where arm-none-eabi-gcc (with newlib), qemu-system-arm
or gcc is missing; the hook, the tick arithmetic and the refusals are tested everywhere.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from clitools import run_cli
from edgeopt.errors import InputError
from edgeopt.export.artifact import ExportConfig
from edgeopt.export.artifact import export_model
from edgeopt.export.c import export_c
from edgeopt.export.c import run_c
from edgeopt.measure import cortexm
from edgeopt.measure.cortexm import CORES
from edgeopt.measure.cortexm import ICOUNT_SHIFT
from edgeopt.measure.cortexm import has_cortexm_tools
from edgeopt.measure.cortexm import measure_cortexm

needs_arm = pytest.mark.skipif(
    not has_cortexm_tools(),
    reason="arm-none-eabi-gcc with newlib, qemu-system-arm or gcc is not installed (Debian: "
    "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm gcc)",
)


@pytest.fixture(scope="module")
def cnn_s_c(cnn_s_int8: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return export_c(cnn_s_int8.onnx_path, tmp_path_factory.mktemp("cortexm") / "c")


def test_generated_schedule_calls_an_empty_layer_hook_by_default(cnn_s_c: Any) -> None:
    source = (cnn_s_c.out_dir / "model.c").read_text()
    assert "#ifndef EDGEOPT_LAYER_END\n#define EDGEOPT_LAYER_END(step) ((void)0)" in source
    calls = [f"    EDGEOPT_LAYER_END({i});" for i in range(cnn_s_c.layers)]
    assert all(call in source for call in calls)
    assert f"EDGEOPT_LAYER_END({cnn_s_c.layers});" not in source


@settings(max_examples=300, deadline=None)
@given(
    start_ns=st.integers(min_value=0, max_value=10**12),
    instructions=st.integers(min_value=0, max_value=10**9),
    core=st.sampled_from(sorted(CORES)),
)
def test_timer_ticks_convert_to_the_exact_instruction_count(
    start_ns: int, instructions: int, core: str
) -> None:
    """At shift 7 an instruction is 128 ns: 3.2 ticks of 40 ns (25 MHz), 2.56 of 50 ns
    (20 MHz), 4.096 of 31.25 ns (32 MHz); the tick difference read by the guest gives back
    every instruction."""
    hz = CORES[core].timer_hz
    end_ns = start_ns + instructions * (1 << ICOUNT_SHIFT)
    ticks = end_ns * hz // 10**9 - start_ns * hz // 10**9
    assert cortexm._instructions(ticks, CORES[core], ICOUNT_SHIFT) == instructions


def test_unknown_core_and_onnx_format_are_refused() -> None:
    with pytest.raises(InputError, match="unknown core 'cortex-m9'.*cortex-m4, cortex-m7"):
        ExportConfig(measure="cortex-m4,cortex-m9")
    with pytest.raises(InputError, match="--format c"):
        ExportConfig(format="onnx", is_raw_input=True, measure="cortex-m4")


def test_missing_tools_name_the_packages_exit_2_and_write_nothing(
    cnn_s_int8: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setattr(cortexm, "has_cortexm_tools", lambda: False)
    out = tmp_path / "c"
    args = ["export", str(cnn_s_int8.onnx_path), "--format", "c", "-o", str(out)]
    code, _, err = run_cli([*args, "--measure", "cortex-m4"], capsys, is_err_flat=True)
    assert code == 2 and "Traceback" not in err
    assert "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm" in err
    assert list(tmp_path.iterdir()) == []


def test_samples_that_are_not_finite_or_too_many_are_refused(
    cnn_s_c: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cortexm, "has_cortexm_tools", lambda: True)
    bad = np.full((1, *cnn_s_c.input_shape), np.nan, dtype=np.float32)
    with pytest.raises(InputError, match="finite"):
        measure_cortexm(cnn_s_c, bad)
    many = np.zeros((cortexm.MAX_SAMPLE_BYTES // 256 + 1, *cnn_s_c.input_shape), np.float32)
    with pytest.raises(InputError, match="fewer samples"):
        measure_cortexm(cnn_s_c, many)


@needs_arm
@pytest.mark.parametrize("core", sorted(CORES))
def test_emulated_outputs_equal_the_host_build_bit_for_bit(
    cnn_s_c: Any, cnn_s_int8: Any, core: str
) -> None:
    x = cnn_s_int8.samples[:3]
    run = measure_cortexm(cnn_s_c, x, core=core)
    host = run_c(cnn_s_c, x)
    assert run.outputs.dtype == host.dtype and run.outputs.tobytes() == host.tobytes()
    assert run.samples == 3 and len(run.instructions) == 3
    assert run.resolution_instructions == 1
    assert run.core.machine == CORES[core].machine


@needs_arm
def test_layers_sum_to_the_inference_and_counts_repeat(cnn_s_c: Any, cnn_s_int8: Any) -> None:
    x = cnn_s_int8.samples[:2]
    first = measure_cortexm(cnn_s_c, x, core="cortex-m4")
    again = measure_cortexm(cnn_s_c, x, core="cortex-m4")
    layers = [layer.instructions for layer in first.layers]
    assert len(layers) == cnn_s_c.layers and min(layers) > 0
    # timer read before the call, after each layer and after the return: the parts sum to the
    # whole within a reading's resolution each
    readings = len(layers) + 1
    gap = abs(sum(layers) + first.return_instructions - first.instructions[0])
    assert gap <= readings * first.resolution_instructions
    assert 0 < first.return_instructions < 50
    assert first.instructions == again.instructions  # -icount: deterministic
    assert layers == [layer.instructions for layer in again.layers]
    # int8 kernels barely depend on the data: samples differ by a fraction of a percent
    assert max(first.instructions) - min(first.instructions) < 0.001 * first.instructions[0]
    record = first.to_dict()
    assert record["method"].startswith("measured (instructions, emulated)")
    assert record["estimated_ms"] == pytest.approx(
        first.instructions_per_inference * CORES["cortex-m4"].cpi / 120e6 * 1e3
    )


@needs_arm
def test_a_layer_with_twice_the_macs_costs_more_instructions(cnn_s_c: Any, cnn_s_int8: Any) -> None:
    run = measure_cortexm(cnn_s_c, cnn_s_int8.samples[:1], core="cortex-m4")
    convs = [layer for layer in run.layers if layer.function == "edgeopt_conv2d"]
    pairs = [(a, b) for a in convs for b in convs if a.macs and b.macs and a.macs == 2 * b.macs]
    assert pairs, [(layer.node, layer.macs) for layer in convs]
    for big, small in pairs:
        assert big.instructions > small.instructions
        assert math.isclose(big.instructions / small.instructions, 2.0, rel_tol=0.25)


@needs_arm
def test_export_measure_prints_counts_without_data(cnn_s_int8: Any, tmp_path: Path) -> None:
    done = export_model(
        cnn_s_int8.onnx_path, ExportConfig(measure="cortex-m4"), output=tmp_path / "c"
    )
    (run,) = done.cortex_m  # type: ignore[union-attr]
    assert run.samples == 2 and "seeded random" in run.inputs
    assert done.to_dict()["cortex_m"][0]["instructions_per_inference"] > 0  # type: ignore[union-attr]
    assert np.isfinite(run.outputs.astype(np.float64)).all()


@needs_arm
def test_cli_prints_the_layers_and_totals_measured_and_estimated(
    cnn_s_int8: Any, tmp_path: Path, capsys: Any
) -> None:
    out = tmp_path / "c"
    args = ["export", str(cnn_s_int8.onnx_path), "--format", "c", "-o", str(out)]
    code, stdout, _ = run_cli(
        [*args, "--measure", "cortex-m4", "--data", "digits", "--samples", "20"],
        capsys,
        is_out_flat=True,
    )
    assert code == 0 and (out / "model.c").exists()
    assert "cortex-m4 (mps2-an386, emulated)" in stdout and "per inference" in stdout
    assert "measured (instructions, emulated)" in stdout and "first 4 test samples" in stdout
    assert "outputs equal to the host build bit for bit" in stdout
    assert "estimated:" in stdout and "at 120 MHz (target cortex-m4)" in stdout
