"""``.npz`` arrays: x / y, an official x_test / y_test, and the errors a bad archive gets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeopt.data import load_data
from edgeopt.errors import InputError


def _arrays(n: int = 40, *, features: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x": rng.normal(size=(n, features)).astype(np.float32),
        "y": np.arange(n) % 4,
    }


def test_npz_keeps_flat_features_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "sensor.npz"
    np.savez(path, **_arrays())
    data = load_data(f"npz:{path}")
    assert data.name == "sensor"
    assert data.input_shape == (6,)  # (N, F) stays (N, F): no channel inserted (issue 14)
    assert data.classes == ("0", "1", "2", "3")
    assert sum(data.sizes()[split] for split in ("train", "val", "test")) == 40
    assert data.split_rule.startswith("stratified 20% test holdout")


def test_npz_keeps_the_shape_of_3d_arrays(tmp_path: Path) -> None:
    path = tmp_path / "images.npz"
    np.savez(
        path,
        x=np.zeros((20, 5, 7), np.uint8) + np.arange(20, dtype=np.uint8)[:, None, None],
        y=np.arange(20) % 2,
    )
    data = load_data(f"npz:{path}")
    assert data.input_shape == (5, 7)  # a sequence or an image: the model says which
    assert data.normalization.raw_dtype == "uint8"


def test_npz_uses_x_test_as_the_official_test_split(tmp_path: Path) -> None:
    path = tmp_path / "split.npz"
    x_test = np.full((8, 6), 3.0, np.float32)
    np.savez(path, **_arrays(), x_test=x_test, y_test=np.arange(8) % 4)
    data = load_data(f"npz:{path}")
    assert data.split_rule.startswith("official test split")
    np.testing.assert_array_equal(data.raw["test"], x_test)
    assert data.sizes()["train"] + data.sizes()["val"] == 40


def test_npz_refuses_archive_without_y_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "no_labels.npz"
    np.savez(path, x=np.zeros((4, 3)), labels=np.zeros(4, np.int64))
    with pytest.raises(InputError, match=r"no_labels\.npz: has no array 'y' \(found: x, labels\)"):
        load_data(f"npz:{path}")


def test_npz_refuses_nan_features(tmp_path: Path) -> None:
    arrays = _arrays()
    arrays["x"][3, 2] = np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, **arrays)
    with pytest.raises(InputError, match="NaN or infinite"):
        load_data(f"npz:{path}")


def test_npz_refuses_float_labels(tmp_path: Path) -> None:
    path = tmp_path / "float_y.npz"
    np.savez(path, x=np.zeros((4, 3)), y=np.array([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(InputError, match="integer class labels"):
        load_data(f"npz:{path}")


def test_npz_refuses_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.npz does not exist"):
        load_data(f"npz:{tmp_path / 'missing.npz'}")


def test_npz_refuses_a_file_that_is_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "text.npz"
    path.write_text("x,y\n1,0\n")
    with pytest.raises(InputError, match=r"text\.npz: cannot be read as \.npz"):
        load_data(f"npz:{path}")


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.array([["a", "b"]] * 20), "holds <U1 values, not numbers"),
        (np.zeros((0, 1, 8, 8), np.float32), "has no samples"),
    ],
)
def test_npz_refuses_text_and_empty_features(tmp_path: Path, x: np.ndarray, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, x=x, y=np.zeros(len(x), dtype=np.int64))
    with pytest.raises(InputError, match=message):
        load_data(f"npz:{path}")


def test_npz_that_unpacks_beyond_the_cap_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compressed archive of zeros is small on disk and huge unpacked: refused from its zip
    directory, before anything is unpacked."""
    import edgeopt.data.tabular as tabular

    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, x=np.zeros((4096, 1, 32, 32), np.float32), y=np.zeros(4096, int))
    assert path.stat().st_size < 100_000
    monkeypatch.setattr(tabular, "MAX_NPZ_BYTES", 2**20)
    with pytest.raises(InputError, match="unpacked, more than 1,048,576; not read"):
        load_data(f"npz:{path}")


def test_npz_whose_header_claims_more_than_it_holds_is_refused(tmp_path: Path) -> None:
    """A .npy header inside the zip (checksums intact) claiming a huge shape made numpy
    allocate it; a label of 10^12 made a tuple of 10^12 class names."""
    import io
    import zipfile

    lying = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": (9**9, 1, 8, 8)}
    np.lib.format.write_array_header_1_0(lying, header)
    lying.write(np.zeros((20, 1, 8, 8), np.float32).tobytes())
    path = tmp_path / "lying.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", lying.getvalue())
        labels = io.BytesIO()
        np.save(labels, np.zeros(20, dtype=np.int64))
        archive.writestr("y.npy", labels.getvalue())
    with pytest.raises(InputError, match=r"x.npy claims shape \(387420489, 1, 8, 8\)"):
        load_data(f"npz:{path}")
    np.savez(path, x=np.zeros((20, 1, 8, 8), np.float32), y=np.full(20, 10**12, dtype=np.int64))
    with pytest.raises(InputError, match="class labels run from 0 to 99,999 at most"):
        load_data(f"npz:{path}")
