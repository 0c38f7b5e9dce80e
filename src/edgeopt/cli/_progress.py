"""The one progress set-up of every command: a live bar on a terminal, plain lines in a log.

Progress goes to stderr, so stdout keeps the results alone. Where stderr is not a terminal that
redraws (``edgeopt optimize ... > log 2>&1``, a CI job, a pipe), a live bar shows nothing until
it is gone, so there each finished epoch or trial is one plain line instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import BarColumn
from rich.progress import MofNCompleteColumn
from rich.progress import Progress
from rich.progress import ProgressColumn
from rich.progress import TextColumn
from rich.progress import TimeElapsedColumn
from rich.progress import TimeRemainingColumn
from rich.status import Status

from edgeopt.cli._common import err_console

#: ``progress(epoch, epochs, step, steps, loss)``: a training loop, after every batch.
EpochFn = Callable[[int, int, int, int, float], None]
#: ``progress(complete, total)``: a search, as trials finish.
TrialFn = Callable[[int, int], None]


def _is_live() -> bool:
    """Whether stderr redraws a bar: a terminal, not a file, a pipe or ``TERM=dumb``."""
    return err_console.is_terminal and not err_console.is_dumb_terminal


def _line(text: str, start: float) -> None:
    """One line of a log: what finished and the seconds since the command's step began."""
    err_console.print(f"{text} ({time.monotonic() - start:,.0f} s)", highlight=False)


def _bar(head: str, *extra: ProgressColumn) -> Progress:
    """The Rich progress of every command: ``head``, a bar, done of total, then ``extra``; on
    stderr, and gone when done."""
    columns = (TextColumn(head, markup=False), BarColumn(), MofNCompleteColumn(), *extra)
    return Progress(*columns, console=err_console, transient=True)


@contextmanager
def epoch_progress(label: str) -> Iterator[EpochFn]:
    """The ``progress`` callback of a training loop (train, distill, QAT): a bar over every
    batch, or a line per finished epoch with its last batch's loss."""
    start = time.monotonic()
    if not _is_live():

        def line(epoch: int, total: int, step: int, steps: int, loss: float) -> None:
            if step + 1 == steps:
                _line(f"{label}: epoch {epoch + 1}/{total} done, loss {loss:.4f}", start)

        yield line
        return
    head = f"{label} epoch {{task.fields[epoch]}}/{{task.fields[epochs]}}"
    last_loss = TextColumn("loss {task.fields[loss]:.4f}", markup=False)
    with _bar(head, last_loss, TimeRemainingColumn()) as bar:
        task = bar.add_task(label, total=None, epoch=0, epochs="?", loss=float("nan"))

        def update(epoch: int, total: int, step: int, steps: int, loss: float) -> None:
            fields = {"epoch": epoch + 1, "epochs": total, "loss": loss}
            bar.update(task, total=total * steps, completed=epoch * steps + step + 1, **fields)

        yield update


@contextmanager
def trial_progress(label: str, *, total: int) -> Iterator[TrialFn]:
    """The ``progress`` callback of a search for ``total`` trials: a bar, or a line each time
    more trials are complete."""
    start = time.monotonic()
    if not _is_live():
        shown = [0]

        def line(complete: int, total: int) -> None:
            if complete > shown[0]:
                shown[0] = complete
                _line(f"{label}: {complete}/{total} trials complete", start)

        yield line
        return
    with _bar(f"{label}: trials", TimeElapsedColumn()) as bar:
        task = bar.add_task(label, total=total)

        def update(complete: int, total: int) -> None:
            bar.update(task, completed=complete, total=total)

        yield update


def status(text: str) -> Status:
    """A spinner with ``text`` on stderr while one long step runs (nothing in a log)."""
    return err_console.status(text)
