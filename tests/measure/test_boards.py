"""Board profiles against MLPerf Tiny (issue 16): the errors BENCHMARKS.md states are the ones
the published results give, each board profile holds the fit and states its error, and that
error reaches every estimate's provenance."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from edgeopt.errors import InputError
from edgeopt.graph import Layer
from edgeopt.measure import profile
from edgeopt.measure.boards import BOARD_RUNS
from edgeopt.measure.boards import BoardRun
from edgeopt.measure.boards import board_peers
from edgeopt.measure.boards import core_runtime_groups
from edgeopt.measure.boards import fit_boards
from edgeopt.measure.boards import leave_one_board_out
from edgeopt.measure.boards import leave_one_model_out
from edgeopt.measure.mlperf import REFERENCE_MODELS
from edgeopt.measure.mlperf import STRUCTURES
from edgeopt.measure.mlperf import reference_layers
from edgeopt.target import Target

#: The fixture exports and quantizes four models: about 15 s on two idle cores.
pytestmark = pytest.mark.slow

BENCHMARKS_MD = Path(__file__).resolve().parents[2] / "BENCHMARKS.md"
#: The structure benchmarks/boards.py chose per core and runtime (its JSON records why), and the
#: profile whose fixed constants a core's fit keeps.
CHOSEN = {
    "Cortex-M4 X-CUBE-AI 7.3": "conv+fc | depthwise",
    "Cortex-M33 X-CUBE-AI 7.3": "shared",
    "Cortex-M7 X-CUBE-AI 7.3": "shared",
    "Cortex-M4 X-CUBE-AI 9.0": "shared + layers",
    "Cortex-M33 X-CUBE-AI 9.0": "shared + layers",
    "Cortex-M7 X-CUBE-AI 9.0": "shared",
    "Cortex-M4 X-CUBE-AI 10.2": "conv | depthwise+fc",
    "Cortex-M33 X-CUBE-AI 10.2": "conv | depthwise+fc",
}
BASES = {"Cortex-M4": "cortex-m4", "Cortex-M33": "cortex-m4", "Cortex-M7": "cortex-m7"}
PROFILES = {
    "NUCLEO-L4R5ZI X-CUBE-AI 9.0": "nucleo-l4r5zi",
    "NUCLEO-H7A3ZI-Q X-CUBE-AI 9.0": "nucleo-h7a3zi-q",
    "NUCLEO-U575ZI-Q X-CUBE-AI 10.2": "nucleo-u575zi-q",
    "NUCLEO-U385RG-Q X-CUBE-AI 10.2": "nucleo-u385rg-q",
    "NUCLEO-L4R5ZI-P X-CUBE-AI 10.2": "nucleo-l4r5zi-p",
}
MODELS = ("kws", "vww", "ic", "ad")


@pytest.fixture(scope="module")
def layers() -> dict[str, list[Layer]]:
    """The zoo's four reference models, exported and quantized to int8 by our PTQ."""
    return {key: reference_layers(key) for key in REFERENCE_MODELS}


def _structure(run: BoardRun) -> object:
    name = CHOSEN[f"{run.core} {run.runtime}"]
    return next(structure for structure in STRUCTURES if structure.name == name)


def _base(run: BoardRun) -> Target:
    return Target.from_name(BASES[run.core])


def _table(label: str) -> dict[str, list[tuple[int, int]]]:
    """BENCHMARKS.md's table after ``label`` in the board section: board key -> per model
    (latency %, energy %)."""
    text = BENCHMARKS_MD.read_text()
    section = text[text.index("## Board profiles vs MLPerf Tiny") :]
    block = section[section.index(label) :]
    rows: dict[str, list[tuple[int, int]]] = {}
    for line in block.split("\n\n", 2)[1].splitlines():
        match = re.match(r"\| (NUCLEO-\S+) \((X-CUBE-AI [\d.]+)\) \|", line)
        if match is None:
            continue
        cells = re.findall(r"([−+]?\d+)% / ([−+]?\d+)%", line)[:4]
        if not cells:  # "n/a": a board without a peer
            continue
        rows[f"{match[1]} {match[2]}"] = [
            (int(a.replace("−", "-")), int(b.replace("−", "-"))) for a, b in cells
        ]
    return rows


def _percent(errors: dict[str, dict[str, float]]) -> list[tuple[int, int]]:
    return [(round(100 * errors[m]["latency"]), round(100 * errors[m]["energy"])) for m in MODELS]


def test_leave_one_board_out_is_what_benchmarks_md_says(
    layers: dict[str, list[Layer]],
) -> None:
    stated = _table("**Leave-one-board-out**")
    computed = {}
    for run in BOARD_RUNS:
        errors = leave_one_board_out(BOARD_RUNS, layers, base=_base(run), structure=_structure(run))
        if run.key in errors:
            computed[run.key] = _percent(errors[run.key])
    assert computed and stated == computed


def test_leave_one_model_out_is_what_benchmarks_md_says(
    layers: dict[str, list[Layer]],
) -> None:
    stated = _table("**Leave-one-model-out**")
    computed = {}
    for runs in core_runtime_groups(BOARD_RUNS).values():
        errors = leave_one_model_out(
            runs, layers, base=_base(runs[0]), structure=_structure(runs[0])
        )
        computed.update({key: _percent(rows) for key, rows in errors.items()})
    assert len(computed) == len(BOARD_RUNS) and stated == computed


def test_a_held_out_board_is_never_fitted_on(layers: dict[str, list[Layer]]) -> None:
    """Doubling the held-out board's own latencies changes nothing in its prediction."""
    run = next(r for r in BOARD_RUNS if r.key == "NUCLEO-U385RG-Q X-CUBE-AI 10.2")
    slower = BoardRun(
        run.board,
        run.core,
        run.clock_hz,
        run.runtime,
        run.source,
        {key: rate / 2 for key, rate in run.throughput.items()},
        run.energy_uj,
    )
    others = [r for r in BOARD_RUNS if r.key != run.key]
    before = leave_one_board_out([*others, run], layers, base=_base(run), structure=_structure(run))
    after = leave_one_board_out(
        [*others, slower], layers, base=_base(run), structure=_structure(run)
    )
    for model in MODELS:
        assert 2 * (after[run.key][model]["latency"] + 1) == pytest.approx(
            before[run.key][model]["latency"] + 1
        )


def test_peers_share_the_core_and_runtime_or_fall_back_to_the_dsp_class() -> None:
    by_key = {run.key: run for run in BOARD_RUNS}
    peers = {key: [p.board for p in board_peers(run, BOARD_RUNS)] for key, run in by_key.items()}
    assert peers["NUCLEO-U575ZI-Q X-CUBE-AI 10.2"] == ["NUCLEO-U385RG-Q"]
    assert peers["NUCLEO-L4R5ZI-P X-CUBE-AI 10.2"] == ["NUCLEO-U575ZI-Q", "NUCLEO-U385RG-Q"]
    assert peers["NUCLEO-H7A3ZI-Q X-CUBE-AI 9.0"] == []


@pytest.mark.parametrize(("key", "name"), PROFILES.items())
def test_board_profile_holds_the_fit_its_power_and_its_error(
    key: str, name: str, layers: dict[str, list[Layer]]
) -> None:
    run = next(r for r in BOARD_RUNS if r.key == key)
    group = core_runtime_groups(BOARD_RUNS)[f"{run.core} {run.runtime}"]
    fit = fit_boards(group, layers, base=_base(run), structure=_structure(run))
    target = Target.from_name(name)
    assert target.clock_hz == run.clock_hz and run.runtime in target.runtime
    assert target.active_power_mw == pytest.approx(run.power_mw(), rel=5e-3)
    for kind, row in fit.target.cycles_per_mac.items():
        assert target.cycles_per_mac[kind]["int8"] == pytest.approx(row["int8"], rel=5e-3)
    lomo = leave_one_model_out(group, layers, base=_base(run), structure=_structure(run))
    lobo = leave_one_board_out(BOARD_RUNS, layers, base=_base(run), structure=_structure(run))
    tables = [lomo[key], *([lobo[key]] if key in lobo else [])]
    for quantity in ("latency", "energy"):
        worst = max(abs(row[quantity]) for table in tables for row in table.values())
        assert target.validated_error[quantity] == math.ceil(100 * worst / 5) * 5 / 100
    assert target.validated_error["results"] == sum(len(r.published) for r in group)


def test_the_u575_energy_is_within_its_stated_error_where_cortex_m4_was_2x_off(
    layers: dict[str, list[Layer]],
) -> None:
    """The issue's case: the board profile carries the U575's own ~23 mW."""
    run = next(r for r in BOARD_RUNS if r.key == "NUCLEO-U575ZI-Q X-CUBE-AI 10.2")
    board = Target.from_name("nucleo-u575zi-q")
    for key, point in run.published.items():
        energy = board.estimate(layers[key]).energy_uj
        assert abs(energy / point.energy_uj - 1) <= board.validated_error["energy"], key


def test_the_validated_error_is_in_the_estimate_provenance() -> None:
    metrics = profile("zoo:lenet5", target="nucleo-u575zi-q", is_latency_measured=False)
    how = metrics.provenance["estimate"]
    assert "±25% latency, ±25% energy, validated on 8 published results" in how
    unvalidated = profile("zoo:lenet5", target="esp32-s3", is_latency_measured=False)
    assert "error not validated" in unvalidated.provenance["estimate"]


def test_the_validated_error_survives_a_round_trip() -> None:
    target = Target.from_name("nucleo-u575zi-q")
    again = Target.from_dict(target.to_dict(), origin="round trip")
    assert again.validated_error == {"latency": 0.25, "energy": 0.25, "results": 8}
    assert again.error_label == target.error_label


@pytest.mark.parametrize(
    "value",
    [
        {"latency": -0.1, "energy": 0.3, "results": 4},
        {"latency": 0.3, "energy": float("nan"), "results": 4},
        {"latency": 0.3, "energy": 0.3, "results": True},
        {"latency": 0.3},
        "30%",
        {"latency": "x"},
    ],
)
def test_a_bad_validated_error_is_one_sentence_naming_the_field(value: object) -> None:
    raw = Target.from_name("nucleo-u575zi-q").to_dict()
    raw["validated_error"] = value
    with pytest.raises(InputError, match="validated_error"):
        Target.from_dict(raw, origin="mine.yaml")
