"""Run the ``edgeopt`` command in-process, as the CLI tests do (on ``sys.path`` via pytest's
``pythonpath``)."""

from __future__ import annotations

import sys

import pytest

from edgeopt.cli import main


def _flat(text: str) -> str:
    return " ".join(text.split())


def run_cli(
    args: list[str],
    capsys: pytest.CaptureFixture[str],
    *,
    is_err_flat: bool = False,
    is_out_flat: bool = False,
) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``edgeopt ARGS``.

    Typer's own usage errors come in a wrapped Rich panel: ``is_err_flat`` joins the lines so a
    message can be matched as one string (edgeopt's errors are one unwrapped line already, which
    the raw text lets a test check).
    """
    argv = sys.argv
    sys.argv = ["edgeopt", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, _flat(out) if is_out_flat else out, _flat(err) if is_err_flat else err
