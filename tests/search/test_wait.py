"""A finished worker waits for trials running elsewhere before it reports (issue 12, item 10)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from edgeopt.errors import InputError
from edgeopt.search import OptimizeConfig
from edgeopt.search.optimize import wait_for_running
from edgeopt.search.storage import open_storage

# The trials here are made with ask/tell, outside Study.optimize; Optuna warns about that.
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")


def study_with_running_trial(tmp_path: Path, storage: object = None) -> tuple[optuna.Study, int]:
    storage = storage or open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="s", storage=storage)
    done = study.ask()
    study.tell(done, 1.0)
    running = study.ask()  # another worker's trial, not finished yet
    return study, running.number


def test_a_trial_running_elsewhere_is_waited_for_and_counted(tmp_path: Path) -> None:
    study, number = study_with_running_trial(tmp_path)
    # The other worker, in another connection: it finishes its trial a moment later.
    other = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")

    def finish() -> None:
        time.sleep(1.0)
        other.tell(number, 0.5)

    thread = threading.Thread(target=finish)
    started = time.monotonic()
    thread.start()
    missing = wait_for_running(study, 60, poll_s=0.1)
    thread.join()
    assert missing == []
    assert time.monotonic() - started >= 1.0
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE]


def test_a_trial_still_running_after_the_bound_is_named(tmp_path: Path) -> None:
    study, number = study_with_running_trial(tmp_path)
    started = time.monotonic()
    assert wait_for_running(study, 0.5, poll_s=0.1) == [number]
    assert time.monotonic() - started < 5


def test_a_killed_workers_trial_is_failed_not_waited_for(tmp_path: Path) -> None:
    """Its heartbeat stopped: after the grace period the trial is failed and the wait ends."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=1, grace_period=1
        )
    study, number = study_with_running_trial(tmp_path, storage)
    storage.record_heartbeat(study.trials[number]._trial_id)  # then the worker died
    time.sleep(1.5)
    started = time.monotonic()
    assert wait_for_running(study, 60, poll_s=0.1) == []
    assert time.monotonic() - started < 10
    assert study.trials[number].state == TrialState.FAIL


@pytest.mark.parametrize("wait_s", [-1.0, float("inf"), float("nan")])
def test_a_bad_wait_is_refused(wait_s: float) -> None:
    with pytest.raises(InputError, match="wait_s"):
        OptimizeConfig(wait_s=wait_s)
