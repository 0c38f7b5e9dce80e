"""Test helpers on small real data: where the shared data sets are, when a checkout has them."""

from __future__ import annotations

from pathlib import Path


def shared_data_dir(name: str) -> Path | None:
    """Find ``shared/data/<name>`` in a folder above this package or the working directory.

    Development checkouts sit next to a ``shared/data`` folder of real data sets (FSDD,
    Fashion-MNIST); users' machines do not, so tests that need one skip when this returns None.

    Args:
        name: The data set's folder under ``shared/data``, e.g. ``"fsdd"``.

    Returns:
        The folder, or None when no parent folder holds it.

    Example:
        >>> found = shared_data_dir("no-such-data-set")
        >>> found is None
        True
    """
    starts = (Path(__file__).resolve().parent, Path.cwd().resolve())
    for start in starts:
        for folder in (start, *start.parents):
            candidate = folder / "shared" / "data" / name
            if candidate.is_dir():
                return candidate
    return None
