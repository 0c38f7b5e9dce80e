"""Data specs -> :class:`Dataset` with deterministic train / val / calib / test splits.

Specs: ``digits`` (scikit-learn's 8x8 digits, the embedded default), ``idx:DIR`` (MNIST-format
IDX files), ``npz:FILE`` (arrays ``x``, ``y``), ``images:DIR`` (one subfolder per class) and
``audio:DIR`` (WAV files -> log-mel features).
"""

from __future__ import annotations

from edgeopt.data import audio as _audio  # noqa: F401  (registers the scheme)
from edgeopt.data import images as _images  # noqa: F401
from edgeopt.data import tabular as _tabular  # noqa: F401
from edgeopt.data.dataset import SPLITS
from edgeopt.data.dataset import Dataset
from edgeopt.data.dataset import Normalization
from edgeopt.errors import InputError
from edgeopt.registry import get_dataset
from edgeopt.registry import list_datasets
from edgeopt.spec import parse_spec

__all__ = ["SPLITS", "Dataset", "Normalization", "load_data"]


def load_data(spec: str | Dataset) -> Dataset:
    """Load a dataset from its spec, with fixed splits and the normalization of its train split.

    Args:
        spec: ``digits``, ``idx:DIR``, ``npz:FILE``, ``images:DIR`` or ``audio:DIR``, each with
            optional ``?key=value`` parameters; a :class:`Dataset` is returned unchanged.

    Returns:
        The dataset; ``dataset.arrays("test")`` gives normalized inputs and labels.

    Raises:
        InputError: the spec names an unknown scheme, a missing or unreadable file, or data
            without samples or labels.

    Example:
        >>> data = load_data("digits")
        >>> data.input_shape, data.num_classes
        ((1, 8, 8), 10)
    """
    if isinstance(spec, Dataset):
        return spec
    parsed = parse_spec(spec)
    if parsed.scheme not in list_datasets():
        known = ", ".join(list_datasets())
        raise InputError(f"unknown data spec {spec!r}; known schemes: {known}.")
    return get_dataset(parsed.scheme)(parsed)
