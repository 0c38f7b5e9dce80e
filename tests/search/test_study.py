"""The study storage: resuming after SIGKILL, local workers on SQLite, workers on PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeopt import load_data
from edgeopt.measure.runtime import make_session

# End to end through the command line in subprocesses: tens of seconds each.
pytestmark = pytest.mark.slow


def command(trained: Path, rundir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edgeopt.cli",
        "optimize",
        "zoo:cnn-s",
        "--weights",
        str(trained.with_suffix(".pt")),
        "--target",
        "cortex-m4",
        "--epochs",
        "2",
        "--finetune-epochs",
        "1",
        "--max-accuracy-drop",  # these test the storage, not the budget: any pick will do
        "none",
        "-o",
        str(rundir),
        *extra,
    ]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "160"}


def sqlite_trials(db: Path) -> dict[int, tuple[str, str | None]]:
    """number -> (state, datetime_complete), read straight from Optuna's tables."""
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            rows = connection.execute(
                "SELECT number, state, datetime_complete FROM trials"
            ).fetchall()
    except sqlite3.OperationalError:  # the tables are not made yet
        return {}
    return {int(number): (str(state), complete) for number, state, complete in rows}


def outputs(path: Path) -> np.ndarray:
    x, _ = load_data("digits").arrays("test")
    session = make_session(path)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_sigkill_mid_trial_resumes_with_completed_trials_kept(
    trained: Path, tmp_path: Path
) -> None:
    rundir = tmp_path / "run"
    args = command(trained, rundir, "--trials", "4")
    process = subprocess.Popen(args, env=environment(), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    killed_with: dict[int, tuple[str, str | None]] = {}
    while time.monotonic() < deadline and process.poll() is None:
        trials = sqlite_trials(rundir / "study.db")
        states = [state for state, _ in trials.values()]
        if "COMPLETE" in states and "RUNNING" in states:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            killed_with = sqlite_trials(rundir / "study.db")
            break
        time.sleep(0.05)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    kept = {n: record for n, record in killed_with.items() if record[0] == "COMPLETE"}
    running = [n for n, record in killed_with.items() if record[0] == "RUNNING"]
    assert kept and running
    rerun = subprocess.run(args, env=environment(), capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    after = sqlite_trials(rundir / "study.db")
    for number, record in kept.items():
        assert after[number] == record  # the same trial, completed at the same time: not re-run
    for number in running:
        assert after[number][0] == "FAIL"
    complete = [n for n, (state, _) in after.items() if state == "COMPLETE"]
    assert len(complete) == 4
    report = json.loads((rundir / "report.json").read_text())
    assert [c["trial"] for c in report["candidates"]] == sorted(complete)
    # The killed trial failed; a candidate may fail on its own too (a mixed-precision budget
    # below the smallest file), and is then counted with it.
    assert report["study"]["trials_failed"] >= len(running)
    assert (rundir / "model.onnx").is_file()


def test_two_local_workers_share_one_sqlite_study(trained: Path, tmp_path: Path) -> None:
    rundir = tmp_path / "run"
    args = command(trained, rundir, "--trials", "4", "--workers", "2")
    done = subprocess.run(args, env=environment(), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads((rundir / "report.json").read_text())
    assert report["study"]["trials_complete"] >= 4
    numbers = [c["trial"] for c in report["candidates"]]
    assert len(set(numbers)) == len(numbers)
    import optuna

    study = optuna.load_study(study_name="edgeopt", storage=f"sqlite:///{rundir / 'study.db'}")
    workers = {t.user_attrs["worker"] for t in study.trials if "worker" in t.user_attrs}
    assert len(workers) == 2  # both processes ran trials
    assert (rundir / "model.onnx").is_file()


def test_workers_on_two_machines_share_a_postgresql_study(
    trained: Path, tmp_path: Path, postgres_url: str
) -> None:
    """Two runs with their own folders (as on two machines) join one study on a PostgreSQL
    server; a third folder that ran nothing rebuilds the chosen model from its recipe."""
    study = f"shared-{os.getpid()}-{time.monotonic_ns()}"
    shared = ("--storage", postgres_url, "--study", study, "--trials", "4")
    first = subprocess.Popen(
        command(trained, tmp_path / "a", *shared, "--workers", "2"),
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    second = subprocess.Popen(
        command(trained, tmp_path / "b", *shared),
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for process in (first, second):
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr
    reports = [json.loads((tmp_path / run / "report.json").read_text()) for run in "ab"]
    trials = {c["trial"] for report in reports for c in report["candidates"]}
    assert len(trials) >= 4
    # One answer: each worker waited for the other's running trials and chose from the whole
    # study, so both folders report the same candidates and the same pick.
    assert [c["trial"] for c in reports[0]["candidates"]] == sorted(trials)
    assert [c["trial"] for c in reports[1]["candidates"]] == sorted(trials)
    assert reports[0]["chosen"] is not None and reports[0]["chosen"] == reports[1]["chosen"]
    assert reports[0]["study"]["trials_running"] == reports[1]["study"]["trials_running"] == []
    assert "secret-pw" not in json.dumps(reports) and "***" in reports[0]["study"]["storage"]
    import optuna

    from edgeopt.search.storage import engine_url

    loaded = optuna.load_study(study_name=study, storage=engine_url(postgres_url))
    hosts = {t.user_attrs["worker"] for t in loaded.trials if "worker" in t.user_attrs}
    assert len(hosts) >= 2
    # A third "machine": no trials of its own, so the chosen model is rebuilt from its recipe.
    third = subprocess.run(
        command(trained, tmp_path / "c", *shared),
        env=environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert third.returncode == 0, third.stderr
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    assert report["study"]["trials_total"] == len(loaded.trials)
    assert report["chosen"] == reports[0]["chosen"]  # re-running reproduces the pick
    chosen = next(c for c in report["candidates"] if c["trial"] == report["chosen"])
    original = next(
        tmp_path / run / chosen["artifact"]
        for run in "ab"
        if (tmp_path / run / chosen["artifact"]).is_file()
    )
    np.testing.assert_array_equal(outputs(tmp_path / "c" / "model.onnx"), outputs(original))
