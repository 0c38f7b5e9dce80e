"""Where a search keeps its study: an Optuna RDB storage, SQLite by default, PostgreSQL to share.

Optuna's :class:`optuna.storages.RDBStorage` holds every trial, its parameters, values and
attributes in a relational database (Akiba et al. 2019, "Optuna: A Next-generation
Hyperparameter Optimization Framework", https://arxiv.org/abs/1907.10902). A SQLite file in the
run folder makes a search resumable after a crash; a PostgreSQL server lets workers on several
machines share one search. The URL is checked by connecting before any training starts, and it
is only ever shown with its password hidden.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeopt._secrets import hide_secrets
from edgeopt._secrets import redact
from edgeopt.errors import InputError

__all__ = [
    "HEARTBEAT_S",
    "check_storage",
    "default_url",
    "engine_url",
    "open_storage",
    "redact",
]

#: Running trials write a heartbeat this often; one silent for GRACE_S is failed by the next
#: worker that starts a trial (Optuna's ``fail_stale_trials``), so a killed worker's trial does
#: not stay RUNNING for ever in a shared study.
HEARTBEAT_S = 10
GRACE_S = 60
#: Seconds a SQLite connection waits for another process's write lock (several local workers).
SQLITE_TIMEOUT_S = 120
CONNECT_TIMEOUT_S = 10
OPEN_ATTEMPTS = 5


def default_url(rundir: Path) -> str:
    """The SQLite file ``RUNDIR/study.db`` as a URL (absolute, so workers agree on it)."""
    return f"sqlite:///{(rundir / 'study.db').resolve()}"


def engine_url(url: str) -> str:
    """The URL SQLAlchemy is given: a bare ``postgresql://`` uses psycopg2 (our dependency),
    since SQLAlchemy 2.1 would otherwise look for psycopg 3."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg2://" + url[len(scheme) :]
    return url


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    if url.startswith("postgresql"):
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
    return {}


def check_storage(url: str) -> None:
    """Connect to the storage once, so a bad URL fails in one sentence before any work.

    Raises:
        InputError: a URL that does not parse, a database driver that is not installed, a SQLite
            file whose folder does not exist, or a server that cannot be reached or refuses the
            credentials.
    """
    from sqlalchemy import create_engine
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    shown = redact(url)
    try:
        parsed = make_url(engine_url(url))
    except Exception:  # noqa: BLE001  (sqlalchemy's ArgumentError and friends)
        raise InputError(
            f"--storage {shown!r} is not a database URL; give sqlite:///PATH or "
            "postgresql://USER:PASSWORD@HOST/DB."
        ) from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            raise InputError(f"--storage {shown!r}: a SQLite study needs a file, not memory.")
        if not Path(database).parent.is_dir():
            raise InputError(
                f"--storage {shown!r}: the folder {Path(database).parent} does not exist."
            )
    try:
        engine = create_engine(engine_url(url), **_engine_kwargs(url))
    except Exception as exc:  # noqa: BLE001  (unknown dialect, missing driver)
        detail = hide_secrets(_first_line(exc), url)
        raise InputError(f"--storage {shown!r} cannot be used ({detail}).") from None
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001  (refused, unknown host, bad password, ...)
        detail = hide_secrets(_first_line(exc), url)
        raise InputError(f"cannot reach the study storage {shown} ({detail}).") from None
    finally:
        engine.dispose()


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


def open_storage(url: str) -> Any:
    """An Optuna RDB storage with heartbeats (stale trials of killed workers are failed).

    Raises:
        InputError: the storage cannot be opened (named, password hidden).
    """
    import time
    import warnings

    import optuna

    for attempt in range(1, OPEN_ATTEMPTS + 1):
        try:
            with warnings.catch_warnings():
                # Heartbeats are marked experimental in Optuna 4 and 5; they are what resumes.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    engine_url(url),
                    engine_kwargs=_engine_kwargs(url),
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                )
        except Exception as exc:  # noqa: BLE001  (sqlalchemy / alembic errors)
            # Workers that start together on a fresh database race to create Optuna's tables
            # (PostgreSQL: a duplicate pg_type key); the loser finds them made on a retry.
            if attempt == OPEN_ATTEMPTS:
                shown, detail = redact(url), hide_secrets(_first_line(exc), url)
                raise InputError(f"cannot open the study storage {shown} ({detail}).") from None
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")
