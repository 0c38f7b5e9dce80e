"""Errors that reach the user as one sentence.

Every problem caused by what the user gave us (a file, a spec, a field, an operator) is raised as
an :class:`InputError`. The CLI prints its message alone and exits with code 2; the library lets it
propagate so callers can catch it. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EdgeoptError(Exception):
    """Base class of every error edgeopt raises on purpose."""

    exit_code = 1


class InputError(EdgeoptError, ValueError):
    """Bad input: the message is one sentence naming the file, field or operator at fault."""

    exit_code = 2


class BudgetError(EdgeoptError):
    """No result meets the device budget (distinct from bad input)."""

    exit_code = 3
