"""A study storage's password never reaches the terminal, an exception, a report or a log, in
every URL form SQLAlchemy accepts, nor the value of ``PGPASSWORD``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from clitools import run_cli
from edgeopt._secrets import redact
from edgeopt._secrets import scrub
from edgeopt.errors import InputError
from edgeopt.search.storage import check_storage

SECRET = "s3cr3t-Pw"
#: A closed port on this machine: the connection is refused at once.
HOST = "127.0.0.1:1"
FORMS = {
    "user-password": (f"postgresql://edgeopt:{SECRET}@{HOST}/db", SECRET),
    "password-with-at": (f"postgresql://edgeopt:{SECRET}@x@{HOST}/db", f"{SECRET}@x"),
    "password-with-colon": (f"postgresql://edgeopt:{SECRET}:x@{HOST}/db", f"{SECRET}:x"),
    "password-percent-40": (f"postgresql://edgeopt:{SECRET}%40x@{HOST}/db", f"{SECRET}%40x"),
    "password-with-slash": (f"postgresql://edgeopt:{SECRET}/x@{HOST}/db", f"{SECRET}/x"),
    "query-password": (f"postgresql://edgeopt@{HOST}/db?password={SECRET}", SECRET),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_a_password_in_any_url_form_is_never_shown(
    form: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, secret = FORMS[form]
    assert SECRET not in redact(url) and "***" in redact(url)
    with pytest.raises(InputError) as caught:
        check_storage(url)
    assert SECRET not in str(caught.value)
    args = ["optimize", "zoo:cnn-s", "--target", "cortex-m4", "--storage", url, "--study", "s"]
    args += ["-o", str(tmp_path / "r")]
    code, out, err = run_cli(args, capsys)
    assert code == 2 and "study storage" in err
    assert SECRET not in out + err
    assert secret not in scrub(f"Traceback ...\nsqlalchemy.exc.OperationalError: {url}")


def test_pgpassword_from_the_environment_is_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PGPASSWORD", SECRET)
    url = f"postgresql://edgeopt@{HOST}/{SECRET}"  # and it even names the database
    args = ["optimize", "zoo:cnn-s", "--target", "cortex-m4", "--storage", url, "--study", "s"]
    args += ["-o", str(tmp_path / "r")]
    code, out, err = run_cli(args, capsys)
    assert code == 2 and SECRET not in out + err


def test_an_internal_error_log_has_no_password(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeopt.cli import _log_internal_error

    url, _ = FORMS["password-with-at"]
    monkeypatch.setattr(sys, "argv", ["edgeopt", "optimize", "--storage", url])
    try:
        raise RuntimeError(f"could not connect to {url}")
    except RuntimeError as exc:
        log = _log_internal_error(exc)
    assert log is not None
    text = log.read_text()
    assert SECRET not in text and "--storage postgresql://edgeopt:***@" in text
