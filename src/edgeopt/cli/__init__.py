"""The ``edgeopt`` command: parse arguments, call the library, render the result.

No logic lives here: every command is options -> config -> a library call -> a renderer of
:mod:`edgeopt.report.console`. The commands live by area (:mod:`~edgeopt.cli.train`,
:mod:`~edgeopt.cli.measure`, :mod:`~edgeopt.cli.compress`, :mod:`~edgeopt.cli.export`,
:mod:`~edgeopt.cli.search`) and are registered here, in the order ``--help`` lists them. Errors
raised on purpose (:class:`edgeopt.errors.EdgeoptError`) become one line on stderr and their
exit code (2 for bad input); nothing is written when a command fails.
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import typer
from rich.text import Text

from edgeopt.cli import compress
from edgeopt.cli import export
from edgeopt.cli import measure
from edgeopt.cli import search
from edgeopt.cli import train
from edgeopt.cli._common import err_console
from edgeopt.errors import EdgeoptError

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fit trained neural networks to low-power devices, measured on the exported artifact.",
)
for command in (
    measure.targets,
    train.train,
    train.distill,
    measure.profile,
    measure.bench,
    compress.quantize,
    compress.prune,
    compress.decompress,
    export.export,
    search.optimize,
    search.apply,
):
    app.command()(command)


#: Errors of the machine, not of edgeopt: a full disk or quota, a read-only or forbidden place.
_ENVIRONMENT_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _log_internal_error(exc: BaseException) -> Path | None:
    """Write the traceback of an unexpected error to a log file (passwords scrubbed); its
    path, or None."""
    import tempfile
    import time
    import traceback

    from edgeopt._secrets import scrub

    try:
        folder = Path(tempfile.gettempdir()) / "edgeopt-logs"
        folder.mkdir(exist_ok=True)
        path = folder / f"edgeopt-{time.strftime('%Y%m%d-%H%M%S')}-{id(exc):x}.log"
        text = "".join(traceback.format_exception(exc))
        path.write_text(scrub(f"edgeopt {' '.join(sys.argv[1:])}\n\n{text}"))
        return path
    except OSError:
        return None


def main() -> None:
    """Entry point: run the app. edgeopt's own errors become one line and their exit code (2
    for bad input); anything else is a bug: one line, exit code 1, and the traceback in a log
    file to report."""
    from edgeopt._secrets import scrub

    try:
        app()
    except EdgeoptError as exc:
        error = Text.assemble(("error:", "bold red"), f" {scrub(str(exc))}")
        err_console.print(error, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted; nothing was written by the step that was running.")
        sys.exit(130)
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRORS:
            raise _internal(exc) from None
        where = f" {exc.filename}" if exc.filename else ""
        error = Text.assemble(
            ("error:", "bold red"),
            f" cannot write{where} ({exc.strerror}); nothing half-written was kept.",
        )
        err_console.print(error, highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:  # a bug: never a bare traceback
        raise _internal(exc) from None


def _internal(exc: BaseException) -> SystemExit:
    """Report an unexpected error in one sentence with its log file; the exit (code 1)."""
    from edgeopt._secrets import scrub

    log = _log_internal_error(exc)
    where = f"; the traceback is in {log}" if log else ""
    first = scrub(" ".join(str(exc).split())[:200])
    error = Text.assemble(
        ("internal error:", "bold red"),
        f" {type(exc).__name__}: {first}{where}. This is a bug in edgeopt, not in your input:"
        " please report it with that file (README: Exit codes and reporting a bug).",
    )
    err_console.print(error, highlight=False, soft_wrap=True)
    return SystemExit(1)
