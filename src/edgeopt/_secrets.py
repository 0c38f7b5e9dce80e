"""Credentials never shown: database URLs and free text with their passwords replaced.

A study storage URL may carry a password (``user:pass@host``, a ``password=`` query parameter,
or ``PGPASSWORD`` in the environment). It reaches messages, logs, reports and recipes only
through these functions.
"""

from __future__ import annotations

import re

__all__ = ["hide_secrets", "redact", "scrub"]

#: Query parameters that carry a credential in a database URL (libpq, SQLAlchemy dialects).
_SECRET_KEYS = ("password", "passwd", "pwd", "sslpassword", "secret", "token", "passfile")
_SECRET_QUERY = re.compile(
    r"([?&;](?:" + "|".join(_SECRET_KEYS) + r")=)[^&;#]*", flags=re.IGNORECASE
)


def redact(url: str) -> str:
    """The URL with every credential replaced by ``***``: the password of ``user:pass@host``
    (one holding ``@``, ``:`` or ``%40`` included) and ``password=`` style query parameters,
    also when the URL does not parse.

    Example:
        >>> redact("postgresql://me:p@s/s:w%40rd@db.example/x?sslmode=require&password=two")
        'postgresql://me:***@db.example/x?sslmode=require&password=***'
    """
    text = _SECRET_QUERY.sub(r"\1***", url)
    scheme, sep, rest = text.partition("://")
    user, password = _user_info(rest) if sep else ("", None)
    if password is None:  # no password before the host; one can only be in the query
        return text
    return f"{scheme}://{user}:***{rest[rest.rfind('@') :]}"


def _user_info(rest: str) -> tuple[str, str | None]:
    """User and password of what follows ``scheme://``. The password runs from the first
    ``:`` to the *last* ``@`` (SQLAlchemy lets it hold ``@``, ``/`` and ``?``): an ``@`` in a
    path or query hides more than the password, never less."""
    at = rest.rfind("@")
    if at < 0:
        return "", None
    user, colon, password = rest[:at].partition(":")
    return user, password if colon else None


_INLINE_PASSWORD = re.compile(r"([A-Za-z][\w+.-]*://[^\s:/@]*:)\S*@")


def scrub(text: str) -> str:
    """Any text (a message, a command line, a traceback) with the passwords of the database
    URLs in it, ``password=`` parameters and the value of ``PGPASSWORD`` replaced by ``***``.

    Example:
        >>> scrub("--storage postgresql://me:p@ss@db/x failed")
        '--storage postgresql://me:***@db/x failed'
    """
    import os

    text = _INLINE_PASSWORD.sub(r"\1***@", _SECRET_QUERY.sub(r"\1***", text))
    secret = os.environ.get("PGPASSWORD")
    return text.replace(secret, "***") if secret else text


def hide_secrets(message: str, url: str) -> str:
    """``message`` (a driver's error, say) with the URL's password and ``PGPASSWORD`` removed,
    in every spelling they may take (as given, percent-decoded, percent-encoded)."""
    import os
    from urllib.parse import quote
    from urllib.parse import unquote

    secrets = set()
    _, sep, rest = url.partition("://")
    password = _user_info(rest)[1] if sep else None
    if password:
        secrets.add(password)
    secrets.update(m.group(0).split("=", 1)[1] for m in _SECRET_QUERY.finditer(url))
    if os.environ.get("PGPASSWORD"):
        secrets.add(os.environ["PGPASSWORD"])
    spellings = {form for s in secrets if s for form in (s, unquote(s), quote(s, safe=""))}
    for secret in sorted(spellings, key=len, reverse=True):
        message = message.replace(secret, "***")
    return redact(message) if "://" in message else message
