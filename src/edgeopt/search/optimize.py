"""``optimize(model, data, target, OptimizeConfig(...))``: search recipes under a device budget.

Every trial of an Optuna study (Akiba et al. 2019, arXiv 1907.10902) picks a recipe from
:mod:`edgeopt.search.space`, builds it with the stage verbs into ``RUNDIR/trials/NNNN/``, and
measures the exported ONNX file with :func:`edgeopt.measure.profile_onnx`: accuracy on the test
split with ONNX Runtime, latency and energy estimated for the target, flash as the file's size,
RAM as the peak of live activations. Nothing comes from the PyTorch side.

The objectives (accuracy up; latency, energy, flash, RAM down, as chosen) go to a seeded
multi-objective sampler: TPE (Ozaki et al. 2020, "Multiobjective Tree-Structured Parzen
Estimator for Computationally Expensive Optimization Problems"; constraints as in Watanabe &
Hutter 2023, c-TPE) or NSGA-II (Deb et al. 2002). The budget reaches the sampler through
``constraints_func`` (a value above 0 breaks a budget), so it learns where the feasible region
is. The choice afterwards is plain: the most accurate feasible candidate, ties to the lowest
energy (:mod:`edgeopt.search.select`).

The study lives in an RDB storage (:mod:`edgeopt.search.storage`): a run killed mid-trial
resumes with its completed trials kept, ``workers`` local processes share one study, and with a
PostgreSQL URL workers on several machines do too.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from dataclasses import replace
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any
from typing import ClassVar

from edgeopt._io import check_writable
from edgeopt._io import scratch_prefix
from edgeopt._io import sweep_scratch
from edgeopt._io import write_json
from edgeopt.config import Config
from edgeopt.data import Dataset
from edgeopt.data import load_data
from edgeopt.errors import EdgeoptError
from edgeopt.errors import InputError
from edgeopt.models import ModelHandle
from edgeopt.models import bind_data
from edgeopt.models import load_model
from edgeopt.pipeline import Recipe
from edgeopt.pipeline import apply_recipe
from edgeopt.search import _report
from edgeopt.search import select
from edgeopt.search._trial import ProgressFn
from edgeopt.search._trial import Search
from edgeopt.search._trial import candidate_record
from edgeopt.search._trial import has_set_constraint
from edgeopt.search._trial import measure
from edgeopt.search._trial import run_trial
from edgeopt.search.select import DEFAULT_MAX_ACCURACY_DROP_PP
from edgeopt.search.space import QUANTIZE_METHODS
from edgeopt.search.space import zoo_students
from edgeopt.search.storage import check_storage
from edgeopt.search.storage import default_url
from edgeopt.search.storage import open_storage
from edgeopt.search.storage import redact
from edgeopt.target import Target

__all__ = ["DEFAULT_MAX_ACCURACY_DROP_PP", "OptimizeConfig", "OptimizeResult", "optimize"]

SAMPLERS = ("tpe", "nsga2")
POLL_S = 0.5
#: Duplicates in a row (proposals of recipes already measured) after which a worker stops: a
#: small space (an ONNX-only model with few quantization choices) holds fewer distinct recipes
#: than ``trials``, and a sampler in a space it has covered proposes nothing new. Duplicates cost
#: a draw each, no training.
EXHAUSTED_AFTER = 25
#: How far (pp) a resumed study's stored baseline accuracy may be from this run's (another
#: CPU may flip a borderline sample; other weights move it more).
RESUME_ACCURACY_PP = 0.5


@dataclass(frozen=True)
class OptimizeConfig(Config):
    """What to search for, under which budget, and how long.

    Budgets (None: no limit): ``max_accuracy_drop_pp`` (test accuracy lost against the baseline
    file, percentage points; default :data:`DEFAULT_MAX_ACCURACY_DROP_PP`, 1 pp, so that a pick
    is never far worse than the model it replaces unless asked; None or infinity: no limit),
    ``max_latency_ms`` and ``max_energy_uj`` (estimated on the
    target), ``max_flash_bytes`` and ``max_ram_bytes`` (default: the target's flash and RAM).
    ``objectives``: from accuracy, latency_ms, energy_uj, flash_bytes, ram_bytes (short names
    latency, energy, flash, ram accepted). ``trials``: completed trials to reach, each a
    distinct recipe (a recipe drawn again is pruned, not rebuilt; a resumed study counts the
    ones it has; a space with fewer stops after :data:`EXHAUSTED_AFTER` duplicates in a row);
    ``timeout_s``: stop starting trials after this long.
    ``storage``: an RDB URL (default ``sqlite:///RUNDIR/study.db``), ``study``: its name,
    ``workers``: local processes. ``wait_s``: how long a finished worker waits for trials still
    running on other workers of a shared study before it reports without them (and names them).
    ``sampler``: tpe | nsga2, seeded with ``seed``.
    ``distill_epochs`` and ``finetune_epochs`` (pruning and QAT) keep a trial cheap;
    ``student_widths``: zoo students at these fractions of the model's width; ``students``:
    further student specs. ``quantize_methods``: from none, ptq8, qat8, ptq4, mixed (an
    int8-only runtime, such as the C exporter, takes ptq8 and qat8). ``threads``: ONNX Runtime
    threads of the host latency.
    """

    kind: ClassVar[str] = "optimize"
    max_accuracy_drop_pp: float | None = DEFAULT_MAX_ACCURACY_DROP_PP
    max_latency_ms: float | None = None
    max_energy_uj: float | None = None
    max_flash_bytes: int | None = None
    max_ram_bytes: int | None = None
    objectives: tuple[str, ...] = ("accuracy", "energy_uj")
    trials: int = 20
    timeout_s: float | None = None
    storage: str | None = None
    study: str = "edgeopt"
    workers: int = 1
    wait_s: float = 3600.0
    seed: int = 0
    sampler: str = "tpe"
    distill_epochs: int = 5
    finetune_epochs: int = 2
    student_widths: tuple[float, ...] = (0.5, 0.25)
    students: tuple[str, ...] = ()
    quantize_methods: tuple[str, ...] = QUANTIZE_METHODS
    threads: int = 1
    is_sensitivity_measured: bool = True

    def __post_init__(self) -> None:
        names = select.objective_names(tuple(self.objectives))
        unknown = [name for name in names if name not in select.DIRECTIONS]
        if not names or unknown:
            known = ", ".join(select.DIRECTIONS)
            bad = unknown[0] if unknown else "(none)"
            raise InputError(f"optimize: objective {bad!r} is not one of {known}.")
        if len(set(names)) != len(names):
            raise InputError("optimize: objectives lists the same objective twice.")
        object.__setattr__(self, "objectives", names)
        object.__setattr__(self, "student_widths", tuple(self.student_widths))
        object.__setattr__(self, "students", tuple(self.students))
        methods = tuple(self.quantize_methods)
        bad = [m for m in methods if m not in QUANTIZE_METHODS]
        if not methods or bad or len(set(methods)) != len(methods):
            raise InputError(
                f"optimize: quantize_methods must be distinct names from "
                f"{', '.join(QUANTIZE_METHODS)}, got {', '.join(methods) or 'none'}."
            )
        object.__setattr__(self, "quantize_methods", methods)
        self._check_budgets()
        for key in ("trials", "workers", "threads", "distill_epochs"):
            if getattr(self, key) < 1:
                raise InputError(f"optimize: {key} must be at least 1, got {getattr(self, key)}.")
        if self.finetune_epochs < 0:
            raise InputError("optimize: finetune_epochs must be 0 or more.")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise InputError(f"optimize: timeout_s must be above 0, got {self.timeout_s}.")
        if not 0 <= self.wait_s < math.inf:
            raise InputError(f"optimize: wait_s must be 0 or more seconds, got {self.wait_s}.")
        if self.sampler not in SAMPLERS:
            raise InputError(f"optimize: sampler must be tpe or nsga2, got {self.sampler!r}.")
        if any(not 0 < width < 1 for width in self.student_widths):
            raise InputError("optimize: every student width must be a fraction in (0, 1).")
        if not self.study:
            raise InputError("optimize: the study needs a name.")

    def _check_budgets(self) -> None:
        """Refuse a budget no candidate could meet or that means nothing (0 bytes, a negative or
        NaN drop); an infinite drop is no limit, stored as None as the report writes it."""
        for key in ("max_latency_ms", "max_energy_uj", "max_flash_bytes", "max_ram_bytes"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise InputError(f"optimize: {key} must be above 0, got {value}.")
        drop = self.max_accuracy_drop_pp
        if drop is not None and not drop >= 0:  # NaN too
            raise InputError(
                f"optimize: max_accuracy_drop_pp must be 0 or more percentage points, or None "
                f"for no limit, got {drop}."
            )
        if drop == math.inf:  # no limit, written as the report's null (JSON has no infinity)
            object.__setattr__(self, "max_accuracy_drop_pp", None)


@dataclass(frozen=True)
class OptimizeResult:
    """A finished search: the report, the chosen model (or the closest ones), and the files.

    ``is_feasible`` is False when no candidate met every budget: ``explanation`` then says
    which budget failed and by how much, ``model_path`` is None and ``closest_paths`` holds
    the closest candidates' copies.
    """

    rundir: Path
    report: dict[str, Any]
    is_feasible: bool
    explanation: str | None
    model_path: Path | None
    recipe_path: Path | None
    closest_paths: tuple[Path, ...] = ()
    report_paths: tuple[Path, ...] = ()

    @property
    def chosen(self) -> dict[str, Any] | None:
        """The chosen candidate's record (None when infeasible)."""
        return self._candidate(self.report["chosen"])

    @property
    def pareto(self) -> list[dict[str, Any]]:
        return [c for c in self.report["candidates"] if c["is_pareto"]]

    def _candidate(self, trial: int | None) -> dict[str, Any] | None:
        found = [c for c in self.report["candidates"] if c["trial"] == trial]
        return found[0] if found else None


def _limits(config: OptimizeConfig, target: Target) -> dict[str, float | None]:
    return {
        "accuracy_drop_pp": config.max_accuracy_drop_pp,
        "latency_ms": config.max_latency_ms,
        "energy_uj": config.max_energy_uj,
        "flash_bytes": config.max_flash_bytes or target.flash_bytes,
        "ram_bytes": config.max_ram_bytes or target.ram_bytes,
    }


def _sampler(search: Search, seed: int) -> Any:
    import optuna

    limits = search.limits

    def constraints(trial: Any) -> list[float]:
        return select.constraint_values(trial.user_attrs.get("candidate", {}), limits)

    extra: dict[str, Any] = {} if has_set_constraint() else {"constraints_func": constraints}
    if search.config.sampler == "nsga2":
        population = max(4, min(50, search.config.trials // 2))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed, **extra)
    startup = max(4, min(10, search.config.trials // 2))
    return optuna.samplers.TPESampler(
        n_startup_trials=startup, seed=seed, multivariate=True, **extra
    )


def _counts(study: Any) -> tuple[int, int]:
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    return states.count(TrialState.COMPLETE), states.count(TrialState.FAIL)


def wait_for_running(study: Any, wait_s: float, *, poll_s: float = POLL_S) -> list[int]:
    """Wait until no trial of the study is running (on this or another machine); the numbers
    of those still running after ``wait_s`` seconds.

    Why: a worker that reaches the wanted number of complete trials while another worker's
    trial is still running would otherwise report (and choose) without it, and two workers of
    one study would choose differently. A worker killed mid-trial stops its heartbeat; its
    trial is failed here after the storage's grace period instead of being waited for.
    The study must be quiet on two polls in a row: a worker that saw too few complete trials
    creates its next trial a moment after it looked.
    """
    import warnings

    import optuna
    from optuna.trial import TrialState

    deadline = time.monotonic() + wait_s
    quiet = 0
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
        quiet = 0 if running else quiet + 1
        if quiet >= 2 or (running and time.monotonic() >= deadline):
            return running
        time.sleep(poll_s)


def _run_worker(search: Search, worker: int) -> None:
    """One worker: run trials on the shared study until enough are complete (or time is up,
    too many failed, or the sampler keeps proposing recipes already measured)."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(search.url)
    study = optuna.load_study(study_name=search.config.study, storage=storage)
    complete, failed_before = _counts(study)
    # Seeds differ per worker and per resumption, so no two draw the same random start.
    seed = search.config.seed + 1000 * worker + len(study.trials)
    study = optuna.load_study(
        study_name=search.config.study, storage=storage, sampler=_sampler(search, seed)
    )
    wanted = search.config.trials
    max_failures = max(3, wanted)
    if complete >= wanted:
        return
    dataset = bind_data(search.handle, load_data(search.data_spec))
    repeats = [0]  # duplicates drawn in a row by this worker

    def stop_when_done(study: Any, trial: Any) -> None:
        complete, failed = _counts(study)
        if search.progress is not None:
            search.progress(min(complete, wanted), wanted)
        is_repeat = trial.state == TrialState.PRUNED and "duplicate_of" in trial.user_attrs
        repeats[0] = repeats[0] + 1 if is_repeat else 0
        is_exhausted = repeats[0] >= EXHAUSTED_AFTER
        if is_exhausted and complete < wanted:
            study.set_user_attr("stopped", _exhausted(complete))  # for the report
        if complete >= wanted or failed - failed_before >= max_failures or is_exhausted:
            study.stop()

    def objective(trial: Any) -> tuple[float, ...]:
        try:
            return run_trial(search, dataset, trial)
        except optuna.TrialPruned:
            raise  # a duplicate recipe, not a failure
        except Exception as exc:
            # Kept with the trial, so the report can say why a candidate failed.
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
            raise

    # Every trial ends complete, failed or as a duplicate, and each stops the study after its
    # bound; duplicates cost no training, and at most EXHAUSTED_AFTER - 1 of them come between
    # two new candidates, so this bound is never the one that stops it.
    runs = wanted - complete + max_failures
    study.optimize(
        objective,
        n_trials=runs * EXHAUSTED_AFTER,
        timeout=search.config.timeout_s,
        catch=(Exception,),  # one broken candidate fails its trial, not the search
        callbacks=[stop_when_done],
    )


def _exhausted(complete: int) -> str:
    """Why a search stopped short of ``--trials``: the space has no recipe left to propose."""
    found = f"{complete} distinct candidate{'s' if complete != 1 else ''}"
    return (
        f"the search space looks exhausted after {found}: the sampler's last {EXHAUSTED_AFTER} "
        "proposals were all recipes already measured (more quantization choices, students or "
        "a PyTorch model widen it)"
    )


def _worker_main(search: Search, worker: int) -> None:
    """Entry point of a spawned worker process: the cores are shared among the workers."""
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // search.config.workers))
    _run_worker(search, worker)


def _run_workers(search: Search, study: Any) -> None:
    """``workers`` spawned processes on the same storage; this process only shows progress."""
    context = multiprocessing.get_context("spawn")
    quiet = replace(search, progress=None)
    processes = [
        context.Process(target=_worker_main, args=(quiet, index), daemon=False)
        for index in range(search.config.workers)
    ]
    for process in processes:
        process.start()
    try:
        while any(process.is_alive() for process in processes):
            if search.progress is not None:
                complete, _ = _counts(study)
                search.progress(min(complete, search.config.trials), search.config.trials)
            time.sleep(POLL_S)
    finally:
        for process in processes:
            process.join(timeout=0 if process.is_alive() else None)
    failed = [p.exitcode for p in processes if p.exitcode != 0]
    if failed:
        raise EdgeoptError(f"{len(failed)} search worker(s) exited with code {failed[0]}.")


def _open_study(search: Search, *, is_own_storage: bool) -> Any:
    """Create the study or join it; a resumed study must have the same objectives."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(search.url)
    objectives = list(search.config.objectives)
    study = optuna.create_study(
        storage=storage,
        study_name=search.config.study,
        directions=[select.DIRECTIONS[name] for name in objectives],
        load_if_exists=True,
    )
    stored = study.user_attrs.get("objectives")
    made_for = {
        "model": search.handle.spec,
        "data": search.data_spec,
        "target": search.target.name,
    }
    if stored is None:
        study.set_user_attr("objectives", objectives)
        study.set_user_attr("baseline_accuracy", search.baseline_accuracy)
        study.set_user_attr("made_for", made_for)
    elif stored != objectives:
        raise InputError(
            f"study {search.config.study!r} in {redact(search.url)} searches "
            f"{', '.join(stored)}, not {', '.join(objectives)}; give another --study."
        )
    else:
        _check_same_problem(search, study.user_attrs, made_for)
    if is_own_storage:
        # The run folder's own SQLite file has no other user: a trial still RUNNING there was
        # killed with its process. (A shared storage relies on heartbeats instead.)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    return study


def _check_same_problem(search: Search, attrs: dict[str, Any], made_for: dict[str, str]) -> None:
    """Refuse to resume a study made for another model, dataset or target: its trials' drops and
    budgets would be mixed with this run's. A baseline more than ``RESUME_ACCURACY_PP`` away
    means other weights under the same spec."""
    stored = attrs.get("made_for")
    where = f"study {search.config.study!r} in {redact(search.url)}"
    if stored is not None and stored != made_for:
        was = ", ".join(f"{key} {stored.get(key)!r}" for key in made_for)
        raise InputError(f"{where} was made for {was}; give another --study or run folder.")
    accuracy = attrs.get("baseline_accuracy")
    if accuracy is not None and abs(accuracy - search.baseline_accuracy) * 100 > RESUME_ACCURACY_PP:
        raise InputError(
            f"{where} was made for a model of {accuracy:.2%} test accuracy, this one measures "
            f"{search.baseline_accuracy:.2%} (other weights?); give another --study or run folder."
        )


def _rebuild(search: Search, dataset: Dataset, record: dict[str, Any]) -> Path:
    """The candidate's file here: found on disk, or rebuilt from its recipe (a remote worker's)."""
    path = search.rundir / record["artifact"]
    if not path.is_file():
        apply_recipe(search.handle, dataset, Recipe.from_dict(record["recipe"]), path)
    return path


def _copy(source: Path, target: Path) -> Path:
    from edgeopt._io import atomic_path

    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return target


def _baseline(handle: ModelHandle, dataset: Dataset, folder: Path) -> Path:
    return apply_recipe(handle, dataset, Recipe(), folder / "model.onnx")


def optimize(
    model: str | ModelHandle,
    data: str | Dataset,
    target: str | Target,
    config: OptimizeConfig | None = None,
    *,
    rundir: str | Path,
    weights: str | Path | None = None,
    progress: ProgressFn | None = None,
) -> OptimizeResult:
    """Search compression recipes for the target and keep the best one that fits the budget.

    Args:
        model: the trained model (spec or handle): the baseline and the distillation teacher.
        data: the data spec or dataset; training uses its train split, accuracy its test split.
        target: the device profile (name, YAML path or :class:`Target`).
        config: budgets, objectives, trial count, storage and workers.
        rundir: the run folder: the study (SQLite by default), trials, the chosen model with its
            recipe, report.json and report.html. Running again on it resumes the study.
        weights: a state dict for a zoo or factory spec.
        progress: called as ``progress(complete, total)`` while trials finish.

    Returns:
        The result: ``is_feasible`` False (with ``explanation``) when no candidate fits.

    Raises:
        InputError: bad model, data, target or budget, or a storage URL that cannot be reached
            (checked before any work).

    Example:
        >>> import tempfile
        >>> r = optimize("zoo:cnn-s", "digits", "cortex-m4", OptimizeConfig(trials=1),
        ...              rundir=tempfile.mkdtemp())  # doctest: +SKIP
    """
    config = config or OptimizeConfig()
    run = Path(rundir)
    check_writable(run / "study.db")
    is_own_storage = config.storage is None
    url = config.storage or default_url(run)
    if not is_own_storage:
        check_storage(url)  # a shared storage the user named: before any work
    dataset = load_data(data)
    resolved = Target.from_name(target) if isinstance(target, str) else target
    handle = load_model(model, weights=weights, data=dataset)
    dataset = bind_data(handle, dataset)
    if handle.input_shape is not None and tuple(handle.input_shape) != dataset.input_shape:
        raise InputError(
            f"{handle.spec}: the model takes input {handle.input_shape} but {dataset.spec} "
            f"gives {dataset.input_shape}."
        )
    students = tuple(zoo_students(handle, config.student_widths)) + config.students
    for student in config.students:  # a typo would fail every trial that draws it: refuse now
        built = load_model(student, data=dataset)
        if not built.is_torch:
            raise InputError(f"student {student}: a student is trained, so give a zoo:NAME spec.")
    # Only valid input gets a run folder (the default SQLite study lives in it).
    is_new_run = not run.exists()
    run.mkdir(parents=True, exist_ok=True)
    new_db = run / "study.db" if is_own_storage and not (run / "study.db").exists() else None
    try:
        return _search(
            handle, dataset, resolved, config, run, url, students, progress, is_own_storage
        )
    except BaseException:
        # A study that a full disk (or anything else) stopped before it held one trial is
        # removed, so the next run starts clean instead of resuming an empty database.
        if new_db is not None:
            _discard_empty_study(new_db)
        if is_new_run and run.is_dir() and not any(run.iterdir()):
            run.rmdir()
        raise


def _discard_empty_study(db: Path) -> None:
    """Delete the SQLite study ``db`` (and its journal) when it records no trial."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            count = connection.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
    except sqlite3.Error:  # empty file, no tables yet, damaged by the failed write
        count = 0
    if count == 0:
        for path in (db, db.with_name(db.name + "-journal"), db.with_name(db.name + "-wal")):
            path.unlink(missing_ok=True)


def _search(
    handle: ModelHandle,
    dataset: Dataset,
    resolved: Target,
    config: OptimizeConfig,
    run: Path,
    url: str,
    students: tuple[str, ...],
    progress: Any,
    is_own_storage: bool,
) -> OptimizeResult:
    """Baseline, study, trials, report: everything after the input was accepted."""
    if is_own_storage:
        check_storage(url)
    # The baseline is built aside and moved into the run folder only once the study accepts it:
    # a study made for another model keeps its run folder as it was.
    sweep_scratch(run)
    scratch = Path(tempfile.mkdtemp(prefix=scratch_prefix("baseline-"), dir=run))
    started = time.perf_counter()
    search = Search(
        handle=handle,
        data_spec=dataset.spec,
        target=resolved,
        config=config,
        rundir=run.resolve(),
        url=url,
        baseline_accuracy=0.0,
        limits=_limits(config, resolved),
        students=tuple(dict.fromkeys(students)),
        progress=progress,
    )
    try:
        baseline_path = _baseline(handle, dataset, scratch)
        baseline_metrics = measure(search, dataset, baseline_path)
        search = replace(search, baseline_accuracy=float(baseline_metrics.accuracy))
        study = _open_study(search, is_own_storage=is_own_storage)
        (run / "baseline").mkdir(exist_ok=True)
        os.replace(baseline_path, run / "baseline" / "model.onnx")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    # Workers on other machines measured drops against the accuracy stored with the study.
    stored_accuracy = float(study.user_attrs.get("baseline_accuracy", search.baseline_accuracy))
    search = replace(search, baseline_accuracy=stored_accuracy)
    sensitivity = (
        _report.sensitivity_table(handle, dataset) if config.is_sensitivity_measured else None
    )
    if config.workers == 1:
        _run_worker(search, 0)
    else:
        _run_workers(search, study)
    # The report and the pick are made from the whole study, trials of other workers included.
    missing = wait_for_running(study, config.wait_s)
    if progress is not None:
        progress(min(_counts(study)[0], config.trials), config.trials)
    baseline = candidate_record(
        -1, Recipe(seed=config.seed), baseline_metrics, stored_accuracy, "baseline/model.onnx"
    )
    seconds = time.perf_counter() - started
    return _finish(search, dataset, study, baseline, sensitivity, seconds, missing)


def _finish(
    search: Search,
    dataset: Dataset,
    study: Any,
    baseline: dict[str, Any],
    sensitivity: dict[str, Any] | None,
    seconds: float,
    missing: list[int],
) -> OptimizeResult:
    """Decide, copy the files, write the report."""
    from optuna.trial import TrialState

    config, run, limits = search.config, search.rundir, search.limits
    trials = study.get_trials(deepcopy=False)
    candidates = [
        dict(t.user_attrs["candidate"])
        for t in sorted(trials, key=lambda t: t.number)
        if t.state == TrialState.COMPLETE and "candidate" in t.user_attrs
    ]
    for record in [baseline, *candidates]:
        record["violations"] = select.violations(record, limits)
        record["is_feasible"] = not record["violations"]
        record.setdefault("memory_schedule", None)  # a study made before it was recorded
    front = select.pareto_front(candidates, config.objectives)
    for record in [baseline, *candidates]:
        record["is_pareto"] = record["trial"] in front
    chosen = select.choose(candidates)
    is_feasible = chosen is not None
    closest = [] if is_feasible else select.closest(candidates, limits)
    explanation = None if is_feasible else select.explain(candidates, limits)
    by_trial = {record["trial"]: record for record in candidates}
    for record in candidates:  # the report plots the schedules of the ones it shows
        if record["trial"] not in {chosen, *closest}:
            record["memory_schedule"] = None
    model_path = recipe_path = None
    closest_paths: list[Path] = []
    if chosen is not None:
        record = by_trial[chosen]
        source = _rebuild(search, dataset, record)
        model_path = _copy(source, run / "model.onnx")
        recipe_path = Recipe.from_dict(record["recipe"]).to_yaml(run / "recipe.yaml")
        write_json(run / "metrics.json", {k: v for k, v in record.items() if k != "recipe"})
    for number in closest:
        record = by_trial[number]
        source = _rebuild(search, dataset, record)
        folder = run / "closest" / f"trial-{number:04d}"
        closest_paths.append(_copy(source, folder / "model.onnx"))
        Recipe.from_dict(record["recipe"]).to_yaml(folder / "recipe.yaml")
        write_json(folder / "metrics.json", {k: v for k, v in record.items() if k != "recipe"})
    states = [t.state for t in trials]
    complete = states.count(TrialState.COMPLETE)
    # Why fewer than --trials are complete, when the space ran out (an earlier run's note is
    # stale once the study has enough).
    stopped = study.user_attrs.get("stopped") if complete < config.trials else None
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else seconds
    report = {
        "schema_version": _report.SCHEMA_VERSION,
        "kind": _report.REPORT_KIND,
        "created": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "environment": _report.environment(config.threads),
        "model": search.handle.spec,
        "data": dataset.spec,
        "target": {
            "name": search.target.name,
            "flash_bytes": search.target.flash_bytes,
            "ram_bytes": search.target.ram_bytes,
            "clock_hz": search.target.clock_hz,
        },
        "constraints": {f"max_{key}": value for key, value in limits.items()},
        "objectives": list(config.objectives),
        "study": {
            "name": config.study,
            "storage": redact(search.url),
            "trials_total": len(trials),
            "trials_complete": complete,
            "trials_failed": states.count(TrialState.FAIL),
            "trials_duplicate": states.count(TrialState.PRUNED),
            "stopped": stopped,
            "trials_running": missing,
            "seconds": round(span, 3),
        },
        "baseline": baseline,
        "candidates": candidates,
        "pareto": front,
        "chosen": chosen,
        "is_feasible": is_feasible,
        "closest": closest,
        "explanation": explanation,
        "sensitivity": sensitivity,
        "provenance": _report.provenance(dataset.spec, search.target.name, config.threads),
    }
    paths = _report.write_report(run, report)
    if not candidates:
        reasons = [t.user_attrs.get("error", "") for t in trials if t.state.is_finished()]
        first = next((r for r in reasons if r), "no trial ran (timeout?)")
        raise EdgeoptError(f"no trial of the search completed; the first failure: {first[:300]}")
    return OptimizeResult(
        rundir=run,
        report=report,
        is_feasible=is_feasible,
        explanation=explanation,
        model_path=model_path,
        recipe_path=recipe_path,
        closest_paths=tuple(closest_paths),
        report_paths=paths,
    )
