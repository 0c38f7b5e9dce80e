"""``optimize`` end to end on digits: the report, the choice, the budget, the CLI exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clitools import run_cli
from edgeopt import InputError
from edgeopt import OptimizeConfig
from edgeopt import OptimizeResult
from edgeopt import load_data
from edgeopt import optimize
from edgeopt.measure.runtime import make_session
from edgeopt.report import schema

REPORT_KEYS = set(schema.REPORT_KEYS)
CANDIDATE_KEYS = set(schema.CANDIDATE_KEYS)


def outputs(path: Path) -> np.ndarray:
    x, _ = load_data("digits").arrays("test")
    session = make_session(path)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def searched(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> OptimizeResult:
    rundir = tmp_path_factory.mktemp("run")
    seen: list[tuple[int, int]] = []
    # No accuracy budget (asked for: the default is 1 pp): every candidate fits cortex-m4's
    # flash and RAM, so one is chosen.
    config = OptimizeConfig(
        trials=3, distill_epochs=1, finetune_epochs=1, seed=0, max_accuracy_drop_pp=None
    )
    result = optimize(
        "zoo:cnn-s",
        "digits",
        "cortex-m4",
        config,
        rundir=rundir,
        weights=trained.with_suffix(".pt"),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen and seen[-1] == (3, 3)
    return result


def test_report_json_has_every_schema_key(searched: OptimizeResult) -> None:
    report = json.loads((searched.rundir / "report.json").read_text())
    assert set(report) == REPORT_KEYS
    assert report["schema_version"] == 1 and report["kind"] == "edgeopt-optimize-report"
    assert report["study"]["trials_complete"] == 3 == len(report["candidates"])
    assert [c["trial"] for c in report["candidates"]] == [0, 1, 2]
    for record in [report["baseline"], *report["candidates"]]:
        assert set(record) == CANDIDATE_KEYS
    assert report["baseline"]["trial"] == -1 and report["baseline"]["recipe"]["steps"] == []
    assert report["baseline"]["memory_schedule"]["bytes"]
    assert report["constraints"]["max_flash_bytes"] == report["target"]["flash_bytes"]
    assert report["constraints"]["max_accuracy_drop_pp"] is None
    assert report["constraints"]["max_latency_ms"] is None
    assert set(report["pareto"]) <= {c["trial"] for c in report["candidates"]}
    assert report["sensitivity"]["layers"] and len(report["sensitivity"]["ratios"]) == 3
    assert set(report["provenance"]) == {
        "accuracy",
        "latency_ms",
        "energy_uj",
        "flash_bytes",
        "ram_bytes",
        "host_latency_ms",
    }
    assert (searched.rundir / "report.html").is_file()


def test_chosen_is_the_most_accurate_feasible_candidate(searched: OptimizeResult) -> None:
    report = searched.report
    assert searched.is_feasible and report["explanation"] is None and report["closest"] == []
    feasible = [c for c in report["candidates"] if c["is_feasible"]]
    best = max(c["accuracy"] for c in feasible)
    chosen = searched.chosen
    assert chosen is not None and chosen["accuracy"] == best
    assert chosen["memory_schedule"] is not None
    assert searched.model_path == searched.rundir / "model.onnx"
    assert searched.model_path.read_bytes() == (searched.rundir / chosen["artifact"]).read_bytes()
    assert (searched.rundir / "recipe.yaml").is_file()
    # Accuracy in the report is the ONNX file's, measured on the test split.
    x, y = load_data("digits").arrays("test")
    measured = float((outputs(searched.model_path).argmax(1) == y).mean())
    assert measured == pytest.approx(chosen["accuracy"])


def test_saved_recipe_replays_to_the_same_outputs(
    searched: OptimizeResult, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "again.onnx"
    args = ["apply", "zoo:cnn-s", "--weights", str(trained.with_suffix(".pt"))]
    args += ["--recipe", str(searched.rundir / "recipe.yaml"), "--data", "digits", "-o", str(out)]
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 0, stderr
    assert "test accuracy" in stdout
    np.testing.assert_array_equal(outputs(out), outputs(searched.rundir / "model.onnx"))


def test_rerun_on_a_finished_study_runs_no_new_trial(
    searched: OptimizeResult, trained: Path
) -> None:
    before = searched.report["candidates"]
    again = optimize(
        "zoo:cnn-s",
        "digits",
        "cortex-m4",
        OptimizeConfig(trials=3, distill_epochs=1, finetune_epochs=1, max_accuracy_drop_pp=None),
        rundir=searched.rundir,
        weights=trained.with_suffix(".pt"),
    )
    assert again.report["study"]["trials_total"] == searched.report["study"]["trials_total"]
    assert [c["accuracy"] for c in again.report["candidates"]] == [c["accuracy"] for c in before]


def test_a_study_made_for_another_target_or_other_weights_is_not_resumed(
    searched: OptimizeResult, trained: Path
) -> None:
    config = OptimizeConfig(trials=3, distill_epochs=1, finetune_epochs=1)
    run = searched.rundir
    weights = trained.with_suffix(".pt")
    baseline = (run / "baseline" / "model.onnx").read_bytes()
    with pytest.raises(InputError, match="was made for model 'zoo:cnn-s', data 'digits'"):
        optimize("zoo:cnn-s", "digits", "cortex-m7", config, rundir=run, weights=weights)
    with pytest.raises(InputError, match="test accuracy, this one measures .*other weights"):
        optimize("zoo:cnn-s", "digits", "cortex-m4", config, rundir=run)  # untrained
    assert searched.report["study"]["trials_total"] == 3
    # the run folder is as it was: its baseline is not the refused model's
    assert (run / "baseline" / "model.onnx").read_bytes() == baseline
    assert not list(run.glob(".baseline-*"))


def test_impossible_budget_exits_3_with_explanation_and_closest_saved(
    trained: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):  # either would make stderr "a terminal"
        monkeypatch.delenv(name, raising=False)
    rundir = tmp_path / "run"
    args = ["optimize", "zoo:cnn-s", "--weights", str(trained.with_suffix(".pt"))]
    args += ["--target", "cortex-m4", "--max-flash", "100", "--trials", "2", "--epochs", "1"]
    args += ["--finetune-epochs", "1", "-o", str(rundir)]
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 3
    assert "flash_bytes" in stderr and "100 B" in stderr and "over by" in stderr
    # stderr is not a terminal here: a line per completed trial, not a live bar that draws none
    progress = [line.split(" (")[0] for line in stderr.splitlines() if line.startswith("optim")]
    assert progress == ["optimize: 1/2 trials complete", "optimize: 2/2 trials complete"]
    report = json.loads((rundir / "report.json").read_text())
    assert report["is_feasible"] is False and report["chosen"] is None
    assert "flash_bytes" in report["explanation"]
    assert 1 <= len(report["closest"]) <= 2
    for number in report["closest"]:
        folder = rundir / "closest" / f"trial-{number:04d}"
        assert (folder / "model.onnx").stat().st_size > 100
        assert (folder / "recipe.yaml").is_file()
    # (the default accuracy budget may be broken too: the flash one is looked up by name)
    violations = report["candidates"][0]["violations"]
    violation = next(v for v in violations if v["constraint"] == "flash_bytes")
    assert violation["constraint"] == "flash_bytes" and violation["limit"] == 100
    assert violation["excess"] == violation["value"] - 100
    assert not (rundir / "model.onnx").exists()


def test_impossible_budget_through_the_api_is_a_result_not_an_error(
    trained: Path, tmp_path: Path
) -> None:
    config = OptimizeConfig(trials=1, distill_epochs=1, finetune_epochs=1, max_energy_uj=0.001)
    result = optimize(str(trained), "digits", "cortex-m4", config, rundir=tmp_path)
    assert not result.is_feasible and result.model_path is None
    assert result.explanation is not None and "energy_uj" in result.explanation
    assert len(result.closest_paths) == 1 and result.closest_paths[0].is_file()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("postgresql://bob:hunter2@127.0.0.1:1/edgeopt", "cannot reach the study storage"),
        ("not a url", "is not a database URL"),
        ("sqlite:////no/such/folder/study.db", "does not exist"),
    ],
)
def test_bad_storage_exits_2_before_any_work(
    url: str, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rundir = tmp_path / "run"
    args = ["optimize", "zoo:cnn-s", "--target", "cortex-m4", "--storage", url]
    code, _, stderr = run_cli([*args, "-o", str(rundir)], capsys)
    assert code == 2
    assert words in stderr and "hunter2" not in stderr
    assert len(stderr.strip().splitlines()) <= 2  # one sentence (Rich may wrap it)
    assert not rundir.exists()


def test_bad_objective_is_input_error() -> None:
    with pytest.raises(InputError, match="'speed' is not one of"):
        OptimizeConfig(objectives=("accuracy", "speed"))
    assert OptimizeConfig(objectives=("accuracy", "energy", "flash")).objectives == (
        "accuracy",
        "energy_uj",
        "flash_bytes",
    )


def test_a_student_of_another_architecture_is_searched(trained: Path, tmp_path: Path) -> None:
    config = OptimizeConfig(
        trials=2,
        distill_epochs=1,
        finetune_epochs=1,
        students=("zoo:lenet300",),
        student_widths=(),
        quantize_methods=("none",),
        seed=0,
    )
    result = optimize(
        "zoo:cnn-s",
        "digits",
        "cortex-m4",
        config,
        rundir=tmp_path / "run",
        weights=trained.with_suffix(".pt"),
    )
    mlp = [
        c
        for c in result.report["candidates"]
        if any(step.get("student") == "zoo:lenet300" for step in c["recipe"]["steps"])
    ]
    assert mlp and mlp[0]["macs"] != result.report["baseline"]["macs"]
    assert mlp[0]["accuracy"] > 0.5  # a trained MLP student, measured on its ONNX file


def test_an_unknown_student_is_refused_before_any_work(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = ["optimize", "zoo:cnn-s", "--weights", str(trained.with_suffix(".pt"))]
    args += ["--data", "digits", "--target", "cortex-m4", "--students", "zoo:no-such-net"]
    code, _, err = run_cli([*args, "-o", str(run)], capsys)
    assert code == 2 and "no-such-net" in err and "Traceback" not in err
    assert not run.exists()  # refused before the run folder (and its study) is made
