"""Board profiles: MLPerf Tiny results of several boards, constants per core and runtime.

A microcontroller's cycles per MAC belong to its core and the runtime that generated the code,
not to the board; its power belongs to the board (regulator, voltage, flash and peripherals).
So the published closed-division results of ST's NUCLEO boards (mlcommons/tiny_results_v1.0,
v1.2 and v1.3; :data:`BOARD_RUNS`) are grouped by core and runtime, a group's constants are
fitted on all its boards at their own clocks with the fit of :mod:`edgeopt.measure.mlperf`
(:func:`fit_boards`), and each board keeps its own measured power. Two checks say what a board
profile's error is: :func:`leave_one_board_out` (a board predicted from other boards only) and
:func:`leave_one_model_out` (a model predicted from the others, on every board of a group).
``benchmarks/boards.py`` runs them and writes the board profiles' ``validated_error``.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from typing import Any

import numpy as np

from edgeopt.graph import Layer
from edgeopt.measure.mlperf import REFERENCE_MODELS
from edgeopt.measure.mlperf import Fit
from edgeopt.measure.mlperf import Published
from edgeopt.measure.mlperf import Structure
from edgeopt.measure.mlperf import fit_constants
from edgeopt.target import Target

__all__ = [
    "BOARD_RUNS",
    "DSP_CORES",
    "BoardFit",
    "BoardRun",
    "board_peers",
    "core_runtime_groups",
    "fit_boards",
    "leave_one_board_out",
    "leave_one_model_out",
]

#: Cores that are one class for a leave-one-board-out fallback: single-issue three-stage
#: pipelines with the same DSP extension (SMLAD dual 16-bit MACs), so the same CMSIS-NN-class
#: kernels; a board whose core and runtime no other board shares is predicted from this class.
DSP_CORES = ("Cortex-M4", "Cortex-M33")


@dataclass(frozen=True)
class BoardRun:
    """One board's MLPerf Tiny closed-division results with one runtime.

    ``throughput`` is the median inferences per second of each model's
    ``performance/results.txt`` and ``energy_uj`` the median uJ per inference of its
    ``energy/results.txt``, both under ``source`` (repository, commit, results folder), as
    published; latency is 1000 / throughput (shared/research/perf-anchors.md section 3).
    """

    board: str
    core: str
    clock_hz: float
    runtime: str
    source: str
    throughput: Mapping[str, float]
    energy_uj: Mapping[str, float]

    @property
    def key(self) -> str:
        return f"{self.board} {self.runtime}"

    @property
    def published(self) -> dict[str, Published]:
        return {
            model: Published(1000.0 / rate, self.energy_uj[model])
            for model, rate in self.throughput.items()
        }

    def power_mw(self, models: Sequence[str] | None = None) -> float:
        """Mean published average power (energy / latency) over ``models`` (all by default)."""
        points = self.published
        return float(np.mean([points[key].power_mw for key in (models or list(points))]))


def _st(version: str, commit: str, folder: str) -> str:
    return (
        f"mlcommons/tiny_results_{version} (commit {commit[:7]}) "
        f"closed/STMicroelectronics/results/{folder}"
    )


#: Every closed-division result of ST's NUCLEO boards that names its runtime and has both a
#: performance and an energy median in the stored results repositories (systems JSON of each
#: round: core, clock, runtime). Round v1.1 (X-CUBE-AI 8.1) of the U575 and H7A3 is left out
#: (its stored copy lacks some results.txt files); the L4R5ZI's v1.1 and v0.5 results are
#: :data:`edgeopt.measure.mlperf.PUBLISHED`. In v1.0 the H7A3's IC energy folder is spelled
#: ``ic/enegy``.
BOARD_RUNS: tuple[BoardRun, ...] = (
    BoardRun(
        "NUCLEO-L4R5ZI",
        "Cortex-M4",
        120e6,
        "X-CUBE-AI 7.3",
        _st("v1.0", "abb8e49aa59f3ad9e8d85ab98ebed0e583358ec3", "NUCLEO_L4R5ZI"),
        {"kws": 13.323, "vww": 4.339, "ic": 4.407, "ad": 131.950},
        {"kws": 3371.738, "vww": 10066.628, "ic": 10681.623, "ad": 322.977},
    ),
    BoardRun(
        "NUCLEO-U575ZI-Q",
        "Cortex-M33",
        160e6,
        "X-CUBE-AI 7.3",
        _st("v1.0", "abb8e49aa59f3ad9e8d85ab98ebed0e583358ec3", "NUCLEO-U575ZI-Q"),
        {"kws": 22.608, "vww": 7.496, "ic": 7.158, "ad": 206.211},
        {"kws": 1138.534, "vww": 3364.456, "ic": 3641.998, "ad": 119.113},
    ),
    BoardRun(
        "NUCLEO-H7A3ZI-Q",
        "Cortex-M7",
        280e6,
        "X-CUBE-AI 7.3",
        _st("v1.0", "abb8e49aa59f3ad9e8d85ab98ebed0e583358ec3", "NUCLEO-H7A3ZI-Q"),
        {"kws": 59.667, "vww": 19.722, "ic": 18.401, "ad": 547.705},
        {"kws": 2721.781, "vww": 7978.465, "ic": 8707.284, "ad": 266.486},
    ),
    BoardRun(
        "NUCLEO-L4R5ZI",
        "Cortex-M4",
        120e6,
        "X-CUBE-AI 9.0",
        _st("v1.2", "b448c5c7110903f4c0d8a24682f95b4903cdfd02", "NUCLEO_L4R5ZI"),
        {"kws": 23.155, "vww": 11.245, "ic": 6.056, "ad": 190.086},
        {"kws": 1820.454, "vww": 3894.566, "ic": 6919.375, "ad": 203.368},
    ),
    BoardRun(
        "NUCLEO-U575ZI-Q",
        "Cortex-M33",
        160e6,
        "X-CUBE-AI 9.0",
        _st("v1.2", "b448c5c7110903f4c0d8a24682f95b4903cdfd02", "NUCLEO_U575ZI_Q"),
        {"kws": 34.416, "vww": 16.870, "ic": 9.003, "ad": 291.589},
        {"kws": 656.163, "vww": 1354.685, "ic": 2578.969, "ad": 81.875},
    ),
    BoardRun(
        "NUCLEO-H7A3ZI-Q",
        "Cortex-M7",
        280e6,
        "X-CUBE-AI 9.0",
        _st("v1.2", "b448c5c7110903f4c0d8a24682f95b4903cdfd02", "NUCLEO_H7A3ZI_Q"),
        {"kws": 88.356, "vww": 42.009, "ic": 24.483, "ad": 816.004},
        {"kws": 1375.599, "vww": 2965.461, "ic": 5090.283, "ad": 165.728},
    ),
    BoardRun(
        "NUCLEO-L4R5ZI-P",
        "Cortex-M4",
        120e6,
        "X-CUBE-AI 10.2",
        _st("v1.3", "eae9ef9f4e90d829f54ea8614b03e332b391f692", "NUCLEO_L4R5ZI-P"),
        {"kws": 23.032, "vww": 11.181, "ic": 6.036, "ad": 208.608},
        {"kws": 1430.6681, "vww": 3029.7521, "ic": 5495.9150, "ad": 160.4232},
    ),
    BoardRun(
        "NUCLEO-U575ZI-Q",
        "Cortex-M33",
        160e6,
        "X-CUBE-AI 10.2",
        _st("v1.3", "eae9ef9f4e90d829f54ea8614b03e332b391f692", "NUCLEO_U575ZI_Q"),
        {"kws": 34.489, "vww": 16.873, "ic": 9.133, "ad": 311.579},
        {"kws": 664.4239, "vww": 1372.1684, "ic": 2565.2442, "ad": 77.2364},
    ),
    BoardRun(
        "NUCLEO-U385RG-Q",
        "Cortex-M33",
        96e6,
        "X-CUBE-AI 10.2",
        _st("v1.3", "eae9ef9f4e90d829f54ea8614b03e332b391f692", "NUCLEO_U385RG_Q"),
        {"kws": 20.703, "vww": 10.128, "ic": 5.481, "ad": 184.851},
        {"kws": 245.3412, "vww": 518.9761, "ic": 965.5817, "ad": 31.8347},
    ),
)


@dataclass(frozen=True)
class BoardFit:
    """Latency constants fitted on some (board, model) results of one core and runtime, and
    each board's predictions at its own clock and its own measured power."""

    structure: Structure
    trained_on: tuple[tuple[str, str], ...]
    target: Target  # the fitted constants (clock and power of ``base``, not of a board)
    latency_ms: dict[str, dict[str, float]]  # run key -> model -> predicted
    energy_uj: dict[str, dict[str, float]]

    def errors(self, runs: Sequence[BoardRun]) -> dict[str, dict[str, dict[str, float]]]:
        """Relative error (predicted / published - 1) per board, model, latency and energy."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for run in runs:
            if run.key not in self.latency_ms:
                continue
            out[run.key] = {
                key: {
                    "latency": self.latency_ms[run.key][key] / point.latency_ms - 1,
                    "energy": self.energy_uj[run.key][key] / point.energy_uj - 1,
                }
                for key, point in run.published.items()
            }
        return out

    def constants(self) -> dict[str, Any]:
        """The fitted numbers, as they go into a board profile's YAML file (its clock and power
        are the board's own)."""
        return Fit(self.structure, (), self.target, {}, {}).constants()


def fit_boards(
    runs: Sequence[BoardRun],
    layers: Mapping[str, Sequence[Layer]],
    *,
    base: Target,
    structure: Structure,
    train_on: Sequence[tuple[str, str]] | None = None,
    predict: Sequence[BoardRun] | None = None,
) -> BoardFit:
    """Fit one set of latency constants to several boards' results; predict every board.

    The fit is :func:`edgeopt.measure.mlperf.fit_constants`, each result's cycles taken at its
    own board's clock. Energy is each predicted latency times the board's own measured average
    power: the mean over the models of that board fitted on, or over all its models when none of
    them was (a board held out whole keeps its own power: only the cycle constants come from
    other boards).

    Args:
        runs: the boards fitted on (one core and runtime, or one class of them).
        layers: each model's layers (int8, from :func:`reference_layers`).
        base: the profile whose fixed constants and float32 costs are kept.
        structure: which constants are fitted.
        train_on: the ``(run.key, model)`` results fitted on (all of ``runs`` by default).
        predict: the boards to predict (``runs`` by default).

    Returns:
        The fitted constants and the predictions for every model of every board in ``predict``.
    """
    pairs = (
        list(train_on)
        if train_on is not None
        else [(run.key, key) for run in runs for key in run.published]
    )
    chosen = set(pairs)
    points = [
        (key, point.latency_ms, run.clock_hz)
        for run in runs
        for key, point in run.published.items()
        if (run.key, key) in chosen
    ]
    fitted = fit_constants(points, layers, base=base, structure=structure)
    latency: dict[str, dict[str, float]] = {}
    energy: dict[str, dict[str, float]] = {}
    for run in predict if predict is not None else runs:
        seen = [key for key in run.published if (run.key, key) in chosen]
        power = run.power_mw(seen or None)
        board = replace(fitted, clock_hz=run.clock_hz, active_power_mw=power)
        latency[run.key] = {key: board.estimate(layers[key]).latency_ms for key in run.published}
        energy[run.key] = {key: value * power for key, value in latency[run.key].items()}
    return BoardFit(structure, tuple(pairs), fitted, latency, energy)


def board_peers(run: BoardRun, runs: Sequence[BoardRun]) -> list[BoardRun]:
    """The boards a held-out board is predicted from: the others with its core and runtime, or,
    when there are none, the others with its runtime whose core is in its class
    (:data:`DSP_CORES`); empty when neither exists (the only Cortex-M7)."""
    others = [other for other in runs if other.key != run.key and other.runtime == run.runtime]
    same = [other for other in others if other.core == run.core]
    if same or run.core not in DSP_CORES:
        return same
    return [other for other in others if other.core in DSP_CORES]


def leave_one_board_out(
    runs: Sequence[BoardRun],
    layers: Mapping[str, Sequence[Layer]],
    *,
    base: Target,
    structure: Structure,
) -> dict[str, dict[str, dict[str, float]]]:
    """Out-of-sample errors per board: each board predicted by constants fitted on its peers
    (:func:`board_peers`) only, at its own clock and with its own measured power.

    Returns:
        ``{run.key: {model: {"latency": error, "energy": error}}}`` for every board with peers.
    """
    errors = {}
    for run in runs:
        peers = board_peers(run, runs)
        if peers:
            fit = fit_boards(peers, layers, base=base, structure=structure, predict=[run])
            errors.update(fit.errors([run]))
    return errors


def leave_one_model_out(
    runs: Sequence[BoardRun],
    layers: Mapping[str, Sequence[Layer]],
    *,
    base: Target,
    structure: Structure,
) -> dict[str, dict[str, dict[str, float]]]:
    """Out-of-sample errors per board: each model predicted on every board by constants fitted
    on the other models of all ``runs`` (one core and runtime), with each board's power the mean
    over its other models.

    Returns:
        ``{run.key: {model: {"latency": error, "energy": error}}}``.
    """
    errors: dict[str, dict[str, dict[str, float]]] = {run.key: {} for run in runs}
    for held_out in REFERENCE_MODELS:
        pairs = [(run.key, key) for run in runs for key in run.published if key != held_out]
        fit = fit_boards(runs, layers, base=base, structure=structure, train_on=pairs)
        for key, row in fit.errors(runs).items():
            errors[key][held_out] = row[held_out]
    return errors


def core_runtime_groups(runs: Sequence[BoardRun]) -> dict[str, list[BoardRun]]:
    """The runs that share one constant set: same core and same runtime."""
    groups: dict[str, list[BoardRun]] = {}
    for run in runs:
        groups.setdefault(f"{run.core} {run.runtime}", []).append(run)
    return groups
