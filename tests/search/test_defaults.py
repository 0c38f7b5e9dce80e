"""What a search does without being told: a 1 pp accuracy budget, printed and recorded, unless
no limit is asked for; one build per distinct recipe (a duplicate draw is pruned, not rebuilt);
an ONNX-only model searches PTQ's own settings, so its trials differ."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import pytest

from clitools import run_cli
from edgeopt import InputError
from edgeopt import OptimizeConfig
from edgeopt import optimize
from edgeopt.search import _trial
from edgeopt.search import select
from edgeopt.search.optimize import EXHAUSTED_AFTER
from edgeopt.search.optimize import _limits
from edgeopt.search.space import suggest_plan
from edgeopt.stages.quantize import PTQConfig
from edgeopt.target import Target

DEFAULT_LINE = "accuracy budget: at most 1 pp below the baseline (default; --max-accuracy-drop)"


def counted_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every recipe a trial builds (``pipeline.run`` as the trials call it), described."""
    calls: list[str] = []
    real = _trial.run

    def run(handle: Any, recipe: Any, **kwargs: Any) -> Any:
        calls.append(recipe.describe())
        return real(handle, recipe, **kwargs)

    monkeypatch.setattr(_trial, "run", run)
    return calls


def onnx_only(trials: int, methods: tuple[str, ...], **extra: Any) -> OptimizeConfig:
    """An ONNX-only search: no zoo students of the file's architecture, so no PyTorch model."""
    return OptimizeConfig(
        trials=trials,
        student_widths=(),
        quantize_methods=methods,
        is_sensitivity_measured=False,
        seed=0,
        **extra,
    )


def test_the_default_budget_is_1_pp_and_none_means_no_limit() -> None:
    assert OptimizeConfig().max_accuracy_drop_pp == select.DEFAULT_MAX_ACCURACY_DROP_PP == 1.0
    assert OptimizeConfig(max_accuracy_drop_pp=None).max_accuracy_drop_pp is None
    assert OptimizeConfig(max_accuracy_drop_pp=math.inf).max_accuracy_drop_pp is None
    for bad in (-1.0, math.nan):
        with pytest.raises(InputError, match="0 or more percentage points, or None"):
            OptimizeConfig(max_accuracy_drop_pp=bad)
    # An old config dict that said no limit (null) still means it.
    raw = OptimizeConfig(max_accuracy_drop_pp=None).to_dict()
    assert OptimizeConfig.from_dict(raw).max_accuracy_drop_pp is None


def test_a_pick_56_pp_below_the_baseline_breaks_the_default_budget() -> None:
    """The issue's case: a search given no accuracy budget chose a model 56 pp worse."""
    limits = _limits(OptimizeConfig(), Target.from_name("cortex-m4"))
    far = {"trial": 0, "accuracy": 0.4, "accuracy_drop_pp": 56.0, "energy_uj": 1.0}
    far.update(flash_bytes=1000, ram_bytes=1000, latency_ms=1.0)
    far["is_feasible"] = not select.violations(far, limits)
    assert not far["is_feasible"] and select.choose([far]) is None
    assert "accuracy drop" in select.explain([far], limits)


def test_the_default_budget_is_printed_and_recorded(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rundir = tmp_path / "run"
    args = ["optimize", str(trained), "--data", "digits", "--target", "cortex-m4"]
    args += ["--trials", "2", "--quantize", "none,ptq8", "--student-widths", "", "-o", str(rundir)]
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 0, stderr
    assert DEFAULT_LINE in stdout.splitlines()  # with the result
    assert DEFAULT_LINE in stderr.splitlines()  # and before the trials
    report = json.loads((rundir / "report.json").read_text())
    assert report["constraints"]["max_accuracy_drop_pp"] == 1.0
    page = (rundir / "report.html").read_text()
    assert '<span data-constraint="max_accuracy_drop_pp">1' in page


@pytest.mark.parametrize(
    ("given", "words"),
    [("lots", "give percentage points (e.g. 1) or none, got 'lots'"), ("-2", "0 or more")],
)
def test_a_bad_accuracy_budget_is_one_sentence_exit_2(
    given: str, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rundir = tmp_path / "run"
    args = ["optimize", "zoo:cnn-s", "--target", "cortex-m4", "--max-accuracy-drop", given]
    code, _, stderr = run_cli([*args, "-o", str(rundir)], capsys, is_err_flat=True)
    assert code == 2 and words in stderr and "Traceback" not in stderr
    assert not rundir.exists()


def test_an_onnx_only_trial_draws_ptq_settings_and_a_pytorch_one_does_not() -> None:
    settings = {
        "ptq_calibration": "percentile",
        "ptq_per_channel": False,
        "ptq_cle": True,
        "ptq_bias_correction": True,
    }
    trial = optuna.trial.FixedTrial({"quantize_onnx": "ptq4", **settings})
    common = {"students": [], "seed": 0, "distill_epochs": 1, "finetune_epochs": 1}
    plan = suggest_plan(trial, is_torch=False, **common)
    assert plan.quantize is not None and plan.quantize.config == PTQConfig(
        bits=4,
        calibration="percentile",
        is_per_channel=False,
        is_equalized=True,
        is_bias_corrected=True,
    )
    # A PyTorch model's draws are as they were: FixedTrial refuses a parameter it lacks.
    torch_trial = optuna.trial.FixedTrial({"prune": "none", "quantize": "ptq8"})
    plan = suggest_plan(torch_trial, is_torch=True, **common)
    assert plan.quantize is not None and plan.quantize.config == PTQConfig()


def test_an_onnx_only_search_runs_as_many_distinct_recipes_as_trials(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = counted_runs(monkeypatch)
    result = optimize(
        str(trained), "digits", "cortex-m4", onnx_only(6, ("none", "ptq8", "ptq4")), rundir=tmp_path
    )
    report = result.report
    recipes = [json.dumps(c["recipe"], sort_keys=True) for c in report["candidates"]]
    assert report["study"]["trials_complete"] == 6 == len(calls) == len(set(recipes))
    assert report["study"]["stopped"] is None
    folders = sorted(p.name for p in (tmp_path / "trials").iterdir())
    assert folders == [f"{c['trial']:04d}" for c in report["candidates"]]
    study = optuna.load_study(study_name="edgeopt", storage=f"sqlite:///{tmp_path / 'study.db'}")
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert report["study"]["trials_duplicate"] == len(pruned)
    built = {t.number: t.user_attrs["plan"] for t in study.trials if t.state.name == "COMPLETE"}
    for trial in pruned:  # each duplicate names a built trial with its very recipe
        assert built[trial.user_attrs["duplicate_of"]] == trial.user_attrs["plan"]


def test_a_duplicate_draw_is_not_rebuilt_and_an_exhausted_space_stops_saying_so(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = counted_runs(monkeypatch)
    result = optimize(str(trained), "digits", "cortex-m4", onnx_only(3, ("none",)), rundir=tmp_path)
    study = result.report["study"]
    assert calls == ["as is (fp32)"]  # one recipe in the space: built once
    assert study["trials_complete"] == 1 and study["trials_duplicate"] == EXHAUSTED_AFTER
    assert "search space looks exhausted after 1 distinct candidate" in study["stopped"]
    assert [p.name for p in (tmp_path / "trials").iterdir()] == ["0000"]
    assert result.is_feasible  # the one candidate is the model as it is: within the budget
