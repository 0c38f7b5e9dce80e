"""Array datasets: scikit-learn's digits, MNIST-format IDX files, and ``.npz`` arrays."""

from __future__ import annotations

import gzip
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from edgeopt.data.dataset import Dataset
from edgeopt.data.dataset import make_dataset
from edgeopt.errors import InputError
from edgeopt.registry import register_dataset
from edgeopt.spec import Spec

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _existing(path: Path, spec: Spec, what: str) -> Path:
    if not path.exists():
        raise InputError(f"{spec.text}: {what} {path} does not exist.")
    return path


@register_dataset("digits")
def load_digits(spec: Spec) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1,797 samples, pixel levels 0..16).

    It has no official test split, so 20% of each class is held out with a fixed seed.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    spec.check_keys(set())
    bunch = sk_load_digits()
    x = bunch.images.astype(np.uint8)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    return make_dataset(
        name="digits",
        spec=spec.text,
        x=x,
        y=y,
        classes=tuple(str(c) for c in range(10)),
        raw_dtype="uint8",
    )


#: The largest IDX file read (decompressed): MNIST's training images are 47 MB.
MAX_IDX_BYTES = 2**30
#: Class labels an .npz may use (each class gets a name and an output of the model).
MAX_CLASSES = 100_000
#: The largest .npz read (its arrays unpacked, as the zip directory states them; a compressed
#: archive can unpack to far more than its size).
MAX_NPZ_BYTES = 4 * 2**30


def read_idx(path: Path, *, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read one IDX file (optionally gzipped); raise InputError naming it when it is corrupt,
    truncated or larger than ``max_bytes`` once decompressed (a gzip bomb is read no further)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            blob = handle.read(max_bytes + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: cannot be read as IDX ({exc}).") from None
    if len(blob) > max_bytes:
        raise InputError(f"{path}: larger than {max_bytes:,} bytes decompressed; not read.")
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0 or blob[2] not in _IDX_DTYPES:
        raise InputError(f"{path}: not an IDX file (bad magic number).")
    dtype = _IDX_DTYPES[blob[2]]
    ndim = blob[3]
    if not 1 <= ndim <= 8:
        raise InputError(f"{path}: an IDX array of {ndim} dimensions; 1 to 8 are read.")
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise InputError(f"{path}: truncated IDX header ({len(blob)} bytes).")
    dims = tuple(int.from_bytes(blob[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = math.prod(dims) if dims else 0
    if len(blob) < header + count * dtype.itemsize:
        raise InputError(f"{path}: truncated IDX file ({len(blob)} bytes for shape {dims}).")
    return np.frombuffer(blob, dtype=dtype, count=count, offset=header).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for suffix in (".gz", ""):
        candidate = folder / f"{stem}{suffix}"
        if candidate.exists():
            return candidate
    return None


@register_dataset("idx")
def load_idx(spec: Spec) -> Dataset:
    """MNIST-format folder: ``train-images-idx3-ubyte[.gz]`` and the label / t10k files.

    The official ``t10k`` files are the test split. ``?limit=N`` keeps the first N training
    samples (a subset named as such in the split rule).
    """
    spec.check_keys({"limit"})
    folder = _existing(Path(spec.body), spec, "folder")
    if not folder.is_dir():
        raise InputError(f"{spec.text}: {folder} is not a folder of IDX files.")
    parts = {}
    for key, stem in {
        "x": "train-images-idx3-ubyte",
        "y": "train-labels-idx1-ubyte",
        "x_test": "t10k-images-idx3-ubyte",
        "y_test": "t10k-labels-idx1-ubyte",
    }.items():
        path = _find_idx(folder, stem)
        if path is None:
            raise InputError(f"{spec.text}: {folder / stem}[.gz] is missing.")
        parts[key] = read_idx(path)
    for images, labels in (("x", "y"), ("x_test", "y_test")):
        if parts[images].ndim != 3 or len(parts[images]) != len(parts[labels]):
            raise InputError(
                f"{spec.text}: {images} has shape {parts[images].shape} but "
                f"{len(parts[labels])} labels."
            )
        which = "training" if images == "x" else "test"
        if len(parts[images]) == 0:
            raise InputError(f"{spec.text}: the {which} IDX files hold no samples.")
        found = parts[labels]
        if found.ndim != 1 or found.dtype.kind not in "iu":
            raise InputError(f"{spec.text}: the {which} labels are not whole numbers in 1-D.")
        if int(found.min()) < 0 or int(found.max()) >= MAX_CLASSES:
            raise InputError(
                f"{spec.text}: a {which} label is outside 0..{MAX_CLASSES - 1:,} "
                f"(found {int(found.min())}..{int(found.max())})."
            )
    limit = spec.pop_int("limit", 0)
    x, y = parts["x"], parts["y"]
    rule = "official t10k test split"
    if limit > 0:
        x, y = x[:limit], y[:limit]
        rule += f"; training pool limited to the first {limit} samples"
    classes = tuple(str(c) for c in range(int(max(y.max(), parts["y_test"].max())) + 1))
    return make_dataset(
        name=folder.name,
        spec=spec.text,
        x=x[:, None, :, :],
        y=y.astype(np.int64),
        x_test=parts["x_test"][:, None, :, :],
        y_test=parts["y_test"].astype(np.int64),
        classes=classes,
        raw_dtype=x.dtype.name,
        test_rule=rule,
    )


def _check_npy_headers(path: Path) -> None:
    """Refuse an array whose ``.npy`` header claims more bytes than its zip member holds (numpy
    would allocate what the header says) or an object array, before any array is read."""
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            try:
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read(member)
            except Exception as exc:  # noqa: BLE001  (numpy's header parser raises anything)
                detail = " ".join(str(exc).split())[:120] or type(exc).__name__
                what = f"{info.filename} is not a .npy array"
                raise InputError(f"{path}: {what} ({detail}).") from None
            if dtype.hasobject:
                raise InputError(f"{path}: {info.filename} holds Python objects; not read.")
            claimed = math.prod(shape) * dtype.itemsize
            if claimed > info.file_size:
                raise InputError(
                    f"{path}: {info.filename} claims shape {shape} ({claimed:,} bytes) in "
                    f"{info.file_size:,} bytes."
                )


@register_dataset("npz")
def load_npz(spec: Spec) -> Dataset:  # noqa: C901  (one bound per untrusted npz member, each refusing in its own sentence)
    """A ``.npz`` with arrays ``x`` and ``y`` (and optionally ``x_test``, ``y_test``).

    ``x`` keeps its own shape: (N, F) features, (N, C, L) sequences or 1-D signals, (N, C, H, W)
    images; a model whose input differs is refused in one sentence, never fed a reshaped array.
    """
    spec.check_keys(set())
    path = _existing(Path(spec.body), spec, "file")
    try:
        with zipfile.ZipFile(path) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: cannot be read as .npz ({exc}).") from None
    if inflated > MAX_NPZ_BYTES:
        raise InputError(
            f"{path}: its arrays take {inflated:,} bytes unpacked, more than {MAX_NPZ_BYTES:,}; "
            "not read."
        )
    _check_npy_headers(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{path}: cannot be read as .npz ({exc}).") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise InputError(f"{path}: has no array {key!r} (found: {', '.join(arrays)}).")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise InputError(f"{path}: has only one of x_test and y_test; give both or neither.")
    has_test = "x_test" in arrays

    def shaped(x: np.ndarray, name: str) -> np.ndarray:
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise InputError(f"{path}: array {name!r} holds {x.dtype} values, not numbers.")
        if x.ndim == 0 or len(x) == 0:
            raise InputError(f"{path}: array {name!r} has no samples.")
        if x.ndim in (2, 3, 4):
            return x
        raise InputError(f"{path}: array {name!r} has shape {x.shape}; expected 2 to 4 dims.")

    def labels(y: np.ndarray, name: str) -> np.ndarray:
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise InputError(f"{path}: {name} must be a 1-D array of integer class labels.")
        if len(y) and y.min() < 0:
            raise InputError(f"{path}: {name} has negative labels.")
        if len(y) and y.max() >= MAX_CLASSES:
            raise InputError(
                f"{path}: {name} has label {y.max()}; class labels run from 0 to "
                f"{MAX_CLASSES - 1:,} at most."
            )
        return y.astype(np.int64)

    def finite(x: np.ndarray, name: str) -> np.ndarray:
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise InputError(f"{path}: {name} contains NaN or infinite values.")
        return x

    x, y = finite(shaped(arrays["x"], "x"), "x"), labels(arrays["y"], "y")
    x_test = finite(shaped(arrays["x_test"], "x_test"), "x_test") if has_test else None
    y_test = labels(arrays["y_test"], "y_test") if has_test else None
    n_classes = int(max(y.max(), y_test.max() if y_test is not None else 0)) + 1
    return make_dataset(
        name=path.stem,
        spec=spec.text,
        x=x,
        y=y,
        x_test=x_test,
        y_test=y_test,
        classes=tuple(str(c) for c in range(n_classes)),
        raw_dtype=x.dtype.name,
    )
